"""The search-agent protocol (Search-R1, arXiv 2503.09516; docs/method.md#agent-protocol): the prompt,
the tags, and what the environment says back.

The Actor answers by interleaving reasoning and search with tags::

    <think> ... </think>                 free reasoning
    <search> query </search>             ask the retriever; ends the assistant turn
    <information> ... </information>     written by the environment, never by the model
    <answer> ... </answer>               the final answer; ends the trajectory

This module holds only text-level pieces of that contract (the rollout engine in
:mod:`searchr2.rollout` turns them into token ids): the prompt, parsing one turn, formatting the
retrieved documents, and the short messages the environment appends. Every sentence is written for
this project (not copied from Search-R1) and kept short, because small models and a CPU budget
pay for every prompt token on every turn.

The environment's own messages deliberately never contain a complete tag pair, so nothing that
parses the response (answer extraction, a meta-refiner, a judge) can mistake them for model output.
"""
from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

#: Strings that end an assistant turn in which searching is allowed (the first one wins).
TURN_STOPS = (SEARCH_CLOSE, ANSWER_CLOSE)
#: Strings that end the final, answer-only turn.
FINAL_STOPS = (ANSWER_CLOSE,)

INSTRUCTIONS = (
    "Answer the question below. Reason step by step inside <think> and </think>. "
    "When you lack a fact, look it up by writing <search>your query</search>; the results will "
    "come back between <information> and </information>. You may search more than once. "
    "When you know the answer, write only the answer itself inside <answer> and </answer>, "
    "for example <answer>Lake Geneva</answer>."
)

#: The prompt of a run without search (``rollout.max_turns: 0``, the R1-base baseline of Search-R1 and
#: Search-R2's tables: RL with the same reward, the model answering from what it knows): the same tags
#: for reasoning and the answer, and no search tool offered.
NO_SEARCH_INSTRUCTIONS = (
    "Answer the question below. Reason step by step inside <think> and </think>, then write only the "
    "answer itself inside <answer> and </answer>, for example <answer>Lake Geneva</answer>."
)

#: Appended (loss-masked) after a turn that neither searched nor answered.
CORRECTION_MESSAGE = (
    "\nThat turn took no action. To look something up, put a query between search tags; "
    "to finish, put the final answer between answer tags.\n"
)
#: Appended (loss-masked) before the last, answer-only turn once the search budget is spent.
FINAL_TURN_MESSAGE = "\nNo searches are left. Give your final answer now, between answer tags.\n"
#: The observation body when retrieval returned nothing for a query.
NO_DOCUMENTS = "No documents were found for this query."

_ANSWER_RE = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)
_SEARCH_RE = re.compile(re.escape(SEARCH_OPEN) + r"(.*?)" + re.escape(SEARCH_CLOSE), re.DOTALL)


def normalize_question(question: str) -> str:
    """Strip the question and make it end with a question mark."""
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    q = question.strip()
    if not q:
        raise ValueError("question is empty")
    return q if q.endswith("?") else q + "?"


def prompt_text(question: str, search: bool = True) -> str:
    """The user message: the protocol (without the search tool when ``search`` is false), then the
    (normalised) question."""
    return f"{INSTRUCTIONS if search else NO_SEARCH_INSTRUCTIONS}\nQuestion: {normalize_question(question)}"


def build_chat_ids(tokenizer, content: str) -> list[int]:
    """Token ids of one user message ``content``, ending where the assistant's reply begins.

    With a chat template: the message followed by the generation prompt (the assistant header).
    Without one: the same text and a newline, with the tokenizer's own special tokens (e.g. BOS);
    the model writes on from there. Baselines with other instructions use this too, so every
    system is prompted the same way.
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                            tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer(content + "\n", add_special_tokens=True)["input_ids"]]


def build_prompt_ids(tokenizer, question: str, search: bool = True) -> list[int]:
    """Token ids of the agent's prompt (:func:`prompt_text`) for ``question``; see :func:`build_chat_ids`."""
    return build_chat_ids(tokenizer, prompt_text(question, search))


def extract_answer(model_output: str | None) -> str | None:
    """The stripped text of the LAST complete ``<answer>…</answer>`` in the model's output, or None.

    Pass only what the model generated: the prompt itself contains an example answer.
    """
    return _last_match(_ANSWER_RE, model_output)


def extract_search(turn_text: str | None) -> str | None:
    """The stripped query of the last complete ``<search>…</search>`` in one turn, or None."""
    return _last_match(_SEARCH_RE, turn_text)


def _last_match(pattern, text: str | None) -> str | None:
    """The stripped group of ``pattern``'s last match in ``text``; None for no text or no match."""
    if not text:
        return None
    matches = pattern.findall(text)
    return matches[-1].strip() if matches else None


def truncate_to_tokens(text: str, tokenizer, max_tokens: int) -> str:
    """The longest prefix of ``text`` made of its first ``<= max_tokens`` tokens, never mid-character.

    Byte-level BPE can split one character over two tokens; decoding such a cut yields U+FFFD, so
    the cut moves back one token at a time until the decoded prefix is clean.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    n = max_tokens
    while n > 0:
        cut = tokenizer.decode(ids[:n], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not cut.endswith("\ufffd"):
            return cut
        n -= 1
    return ""


def format_documents(docs: list[dict], tokenizer, max_tokens: int) -> str:
    """Retrieved passages, one per line ``Doc i(Title: <title>) <text>``, within ``max_tokens`` tokens.

    Newlines inside a passage become spaces so each document stays on its line. The whole block is
    cut at a token boundary when it exceeds the budget (later documents lose out first).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not docs:
        return NO_DOCUMENTS
    lines = []
    for i, doc in enumerate(docs, start=1):
        title = " ".join(str(doc.get("title", "")).split())
        text = " ".join(str(doc.get("text", "")).split())
        lines.append(f"Doc {i}(Title: {title}) {text}")
    return truncate_to_tokens("\n".join(lines), tokenizer, max_tokens)


def observation_text(docs: list[dict], tokenizer, max_tokens: int) -> str:
    """What the environment appends after a search: the formatted documents in information tags."""
    return f"\n{INFO_OPEN}{format_documents(docs, tokenizer, max_tokens)}{INFO_CLOSE}\n"
