"""The two non-agent baselines of the paper's Table 2: Direct inference and RAG.

Both answer in one generation, with no search during it: Direct sees only the question, RAG sees
the top-k passages retrieved for the question itself. The paper copies these rows from Search-R1
(Table 2, "copied by the paper from Search-R1"), which ran them with FlashRAG: the model is asked for
the answer alone, in plain text, and its reply is the prediction. Systems ``direct`` and ``rag`` do the
same: the prediction is the reply's first non-empty line, stripped (:func:`reply_prediction`).

``direct_tagged`` and ``rag_tagged`` are the same prompts asking for the answer inside
``<answer>...</answer>`` instead, scored like the agent (only a tagged answer counts). They are
extra rows, not the paper's: an instruct model that was never taught the tags rarely writes them, so
they measure the format as much as the knowledge (docs/deviations.md).

All four reuse the agent's rollout engine (a prompt-only prefix continued for one answer-only turn,
``max_turns=0``), so batching and decoding are the same code as the agent's.
"""
from __future__ import annotations

import dataclasses

from searchr2.protocol import build_chat_ids, format_documents, normalize_question
from searchr2.rollout import RolloutConfig, Trajectory, rollout, search_batch

#: the paper's rows: answer alone, the reply is the prediction
DIRECT_INSTRUCTIONS = (
    "Answer the question below from what you know. Reply with the answer alone: a name, a date, a "
    "number or a few words, with no explanation."
)
RAG_INSTRUCTIONS = (
    "Answer the question below using the documents. Reply with the answer alone: a name, a date, a "
    "number or a few words, with no explanation."
)
#: the tagged variants (extra rows): the answer must come inside <answer> tags, as the agent's does
DIRECT_TAGGED_INSTRUCTIONS = (
    "Answer the question below from what you know. Write only the answer itself inside <answer> and "
    "</answer>, for example <answer>Lake Geneva</answer>."
)
RAG_TAGGED_INSTRUCTIONS = (
    "Answer the question below using the documents. Write only the answer itself inside <answer> and "
    "</answer>, for example <answer>Lake Geneva</answer>."
)
#: system name -> (uses retrieval, answer in plain text)
SYSTEMS = {"direct": (False, True), "rag": (True, True),
           "direct_tagged": (False, False), "rag_tagged": (True, False)}


def reply_prediction(reply: str) -> str | None:
    """The prediction of an answer-only reply: its first non-empty line, stripped; None if it has none."""
    for line in reply.splitlines():
        if line.strip():
            return line.strip()
    return None


def _prompt_only(tokenizer, question: str, content: str) -> Trajectory:
    ids = build_chat_ids(tokenizer, content)
    return Trajectory(question=question, token_ids=ids, loss_mask=[0] * len(ids), prompt_len=len(ids))


def direct_prompt(question: str, tagged: bool = False) -> str:
    instructions = DIRECT_TAGGED_INSTRUCTIONS if tagged else DIRECT_INSTRUCTIONS
    return f"{instructions}\nQuestion: {normalize_question(question)}"


def rag_prompt(question: str, documents_text: str, tagged: bool = False) -> str:
    instructions = RAG_TAGGED_INSTRUCTIONS if tagged else RAG_INSTRUCTIONS
    return f"{instructions}\nDocuments:\n{documents_text}\nQuestion: {normalize_question(question)}"


def _answer(model, tokenizer, prefixes: list[Trajectory], cfg: RolloutConfig, plain: bool) -> list[Trajectory]:
    """Continue each prompt for one answer-only turn; in ``plain`` mode the reply is the prediction."""
    trajs = rollout(model, tokenizer, None, [p.question for p in prefixes], dataclasses.replace(cfg, max_turns=0),
                    prefixes=prefixes)
    if plain:
        for t in trajs:
            reply = tokenizer.decode([i for i, m in zip(t.token_ids, t.loss_mask) if m], skip_special_tokens=True)
            t.answer = reply_prediction(reply)
    return trajs


def answer_direct(model, tokenizer, questions: list[str], cfg: RolloutConfig, tagged: bool = False) -> list[Trajectory]:
    """One greedy answer per question, no retrieval (``tagged``: inside answer tags, else the plain reply)."""
    prefixes = [_prompt_only(tokenizer, q, direct_prompt(q, tagged)) for q in questions]
    return _answer(model, tokenizer, prefixes, cfg, plain=not tagged)


def answer_rag(model, tokenizer, retriever, questions: list[str], cfg: RolloutConfig,
               tagged: bool = False) -> list[Trajectory]:
    """Retrieve top-k for each question (one batched call), then one greedy answer per question."""
    docs = search_batch(retriever, [normalize_question(q) for q in questions], cfg.top_k, cfg)
    prefixes = []
    for q, d in zip(questions, docs):
        text = rag_prompt(q, format_documents(d, tokenizer, cfg.max_obs_tokens), tagged)
        prefix = _prompt_only(tokenizer, q, text)
        prefix.searches, prefix.documents = [normalize_question(q)], [d]
        prefixes.append(prefix)
    return _answer(model, tokenizer, prefixes, cfg, plain=not tagged)


def answer_baseline(system: str, model, tokenizer, retriever, questions: list[str],
                    cfg: RolloutConfig) -> list[Trajectory]:
    """Answer ``questions`` with the baseline ``system`` (a key of :data:`SYSTEMS`)."""
    retrieves, plain = SYSTEMS[system]
    if retrieves:
        return answer_rag(model, tokenizer, retriever, questions, cfg, tagged=not plain)
    return answer_direct(model, tokenizer, questions, cfg, tagged=not plain)
