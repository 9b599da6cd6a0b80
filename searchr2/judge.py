"""Judges of the process reward (the paper's "information density", arXiv 2602.03647; docs/method.md#hybrid-reward).

A trajectory that made ``M`` search calls received ``M`` collections of documents (the top-k of each
call, ``Trajectory.documents``). A judge decides how many of those collections were *useful*: they
carry information or a clue toward the gold answer, even partially, and do not merely repeat what
an earlier collection of the same trajectory already gave. The process reward is then
``useful / M`` (0 when ``M`` is 0), see :mod:`searchr2.reward`.

Two judges share one interface (:class:`Judge`): ``judge(records, trajectories)`` returns one
:class:`JudgeResult` per trajectory, and ``process_scores(records, trajectories)`` just the
``r_process`` values in ``[0, 1]``. ``records`` are QA records (``{"question", "golden_answers",
"metadata": {...}}``) aligned with the trajectories by position.

* :class:`RuleJudge` — deterministic, no model. **A declared deviation from the paper**, whose
  judge is an LLM; it exists for settings where no judge model fits (the CPU default profile).
* :class:`LLMJudge` — any local Hugging Face causal LM, prompted with the question, the gold
  answer(s) and the numbered collections, answering with the count of useful ones (the paper's
  set-up: DeepSeek-R1-Distill-Qwen-7B, greedy).

:func:`make_judge` builds the judge named by the ``reward`` params (see
:class:`searchr2.reward.RewardConfig`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from searchr2.generation import by_length, eos_ids, eval_mode, generation_config, left_pad, pad_id
from searchr2.metrics import normalize_answer
from searchr2.protocol import build_chat_ids, format_documents, normalize_question

JUDGES = ("rule", "llm")

#: Gold answers that are verdicts, not facts: they never count as evidence found in a passage
#: (the word "no" in some passage says nothing about a comparison question's answer).
VERDICT_ANSWERS = frozenset({"yes", "no"})

#: At most this many gold aliases are shown to the LLM judge (TriviaQA lists dozens per question).
MAX_ALIASES_SHOWN = 5


@dataclass
class JudgeResult:
    """What a judge concluded about one trajectory's collections.

    ``useful`` is the number of useful collections out of ``searches`` (= M, the number of
    collections the trajectory received). ``flags`` holds one 0/1 per collection when the judge
    decides collection by collection (the rule judge); the LLM judge gives only a count, so it is
    None there. ``parsed`` is False when an LLM reply held no usable integer (then ``useful`` is 0);
    ``reply`` keeps that reply for logs.
    """

    useful: int
    searches: int
    flags: list[int] | None = None
    parsed: bool = True
    reply: str | None = None

    @property
    def process(self) -> float:
        """``r_process = useful / M``, 0.0 when the trajectory never searched."""
        return self.useful / self.searches if self.searches else 0.0


class Judge(Protocol):
    """What :mod:`searchr2.reward` needs from a judge."""

    name: str

    def judge(self, records: Sequence[dict], trajectories: Sequence) -> list[JudgeResult]:
        ...

    def process_scores(self, records: Sequence[dict], trajectories: Sequence) -> list[float]:
        ...


def _check_aligned(records: Sequence[dict], trajectories: Sequence) -> None:
    if len(records) != len(trajectories):
        raise ValueError(f"{len(records)} records but {len(trajectories)} trajectories: they must align one to one")


def collections_of(traj) -> list[list[dict]]:
    """The trajectory's collections in search order: one list of document dicts per search call."""
    docs = getattr(traj, "documents", None)
    if docs is None:
        raise TypeError(f"expected a Trajectory (with .documents), got {type(traj).__name__}")
    return [list(c) for c in docs]


# --------------------------------------------------------------------------------------------- rule

def _doc_key(doc: dict) -> str:
    """A passage's identity: its id; a document without one is identified by its title and text."""
    pid = doc.get("id")
    if pid is not None and str(pid) != "":
        return f"id:{pid}"
    return f"txt:{doc.get('title', '')}\x00{doc.get('text', '')}"


def _alias_tokens(golden_answers: Sequence[str]) -> list[list[str]]:
    """Normalised gold aliases as token lists, dropping empty ones and yes/no verdicts."""
    out, seen = [], set()
    for gold in golden_answers:
        norm = normalize_answer(str(gold))
        if not norm or norm in VERDICT_ANSWERS or norm in seen:
            continue
        seen.add(norm)
        out.append(norm.split())
    return out


def _contains_words(words: list[str], target: list[str]) -> bool:
    n = len(target)
    return any(words[i:i + n] == target for i in range(len(words) - n + 1))


def mentions_answer(doc: dict, aliases: list[list[str]]) -> bool:
    """True when some alias occurs, as whole words after SQuAD normalisation, in the title or text.

    Title and text are checked separately, so no match straddles the two. "paris" matches
    "... in Paris." but not "Parisian".
    """
    for part in (doc.get("title", ""), doc.get("text", "")):
        words = normalize_answer(str(part or "")).split()
        if any(_contains_words(words, alias) for alias in aliases):
            return True
    return False


def supporting_ids(record: dict) -> set[str]:
    """The record's supporting passage ids as strings (empty when the data has none)."""
    meta = record.get("metadata") or {}
    ids = meta.get("supporting_passage_ids") if isinstance(meta, dict) else None
    return {str(i) for i in ids} if ids else set()


class RuleJudge:
    """Deterministic stand-in for the paper's LLM judge (a declared deviation, docs/deviations.md#rule-judge).

    Collection ``i`` of a trajectory is useful (``u_i = 1``) when BOTH hold:

    1. it carries evidence: some document of it mentions a gold alias (whole words after SQuAD
       normalisation, in its title or its text; yes/no answers are verdicts and never count), or
       has an id among the record's ``metadata.supporting_passage_ids`` (when the record has them);
    2. it is not a repeat: at least one of its documents (by id) did not appear in any earlier
       collection of the same trajectory, useful or not.

    An empty collection is never useful. The evidence does not have to sit in the new document:
    the rule reads "the collection contains evidence and adds something new", as the paper's process
    reward defines usefulness (docs/method.md#hybrid-reward).
    """

    name = "rule"

    def flags(self, record: dict, traj) -> list[int]:
        """``u_i`` for each collection of ``traj``, in search order."""
        aliases = _alias_tokens(record.get("golden_answers") or [])
        support = supporting_ids(record)
        seen: set[str] = set()
        out = []
        for docs in collections_of(traj):
            keys = [_doc_key(d) for d in docs]
            new = any(k not in seen for k in keys)
            evidence = any(str(d.get("id")) in support for d in docs if d.get("id") is not None) or \
                any(mentions_answer(d, aliases) for d in docs)
            out.append(1 if (new and evidence) else 0)
            seen.update(keys)
        return out

    def judge(self, records: Sequence[dict], trajectories: Sequence) -> list[JudgeResult]:
        _check_aligned(records, trajectories)
        results = []
        for record, traj in zip(records, trajectories):
            f = self.flags(record, traj)
            results.append(JudgeResult(useful=sum(f), searches=len(f), flags=f))
        return results

    def process_scores(self, records: Sequence[dict], trajectories: Sequence) -> list[float]:
        return [r.process for r in self.judge(records, trajectories)]


# ---------------------------------------------------------------------------------------------- llm

JUDGE_INSTRUCTIONS = (
    "You are checking the searches an assistant made while answering a question. You get the "
    "question, its correct answer, and what each search returned, in the order the searches were "
    "made. Call a search's results useful when they give information or a clue that helps reach "
    "the correct answer, even if only part of the way. They are not useful when they are off-topic, "
    "or when they only repeat what an earlier search had already returned."
)

_INT_RE = re.compile(r"-?\d+")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def judge_prompt_text(question: str, golden_answers: Sequence[str], collections: list[list[dict]], tokenizer,
                      doc_tokens: int) -> str:
    """The judge's user message. Each collection is cut to ``doc_tokens`` tokens of the tokenizer."""
    m = len(collections)
    golds = [" ".join(str(g).split()) for g in golden_answers if str(g).strip()][:MAX_ALIASES_SHOWN]
    answer = golds[0] if golds else ""
    if len(golds) > 1:
        answer += " (also accepted: " + "; ".join(golds[1:]) + ")"
    lines = [JUDGE_INSTRUCTIONS, "", f"Question: {normalize_question(question)}", f"Correct answer: {answer}", ""]
    for i, docs in enumerate(collections, start=1):
        lines.append(f"Search {i} returned:")
        lines.append(format_documents(docs, tokenizer, doc_tokens))
        lines.append("")
    lines.append(f"How many of these {m} searches returned useful results? Think it over if you need to, "
                 f"then end your reply with a single whole number from 0 to {m}.")
    return "\n".join(lines)


def parse_count(reply: str | None, m: int, thinking: bool = False) -> int | None:
    """The judge's count read from its reply: the LAST integer in it, clipped to ``[0, m]``.

    The last one, because the prompt asks the model to END with the number, and a reasoning model
    writes its working (which mentions search numbers) before the verdict. Reasoning is dropped
    first: only the text after the last ``</think>`` is read. A reply that opened a ``<think>`` block
    and never closed it (or, with ``thinking=True``, a reply that started inside one, as when the chat
    template opens it, and never closed it) was cut off mid-thought: unparsable. Returns None when
    unparsable; the judge then counts 0.
    """
    if reply is None:
        return None
    if not isinstance(m, int) or m < 0:
        raise ValueError(f"m must be an int >= 0, got {m!r}")
    text = reply
    if THINK_CLOSE in text:
        text = text.rsplit(THINK_CLOSE, 1)[1]
    elif THINK_OPEN in text or thinking:
        return None
    found = _INT_RE.findall(text)
    if not found:
        return None
    return max(0, min(m, int(found[-1])))


def _opens_thinking(prompt_text: str) -> bool:
    """True when the prompt (its chat template's generation header) leaves a think block open."""
    tail = prompt_text.rsplit(THINK_CLOSE, 1)[-1]
    return THINK_OPEN in tail


class LLMJudge:
    """The paper's judge: a causal LM counts the useful collections (greedy, one integer reply).

    Trajectories with no search are not sent to the model (their count is 0 of 0). The others are
    prompted (:func:`judge_prompt_text` in the tokenizer's chat template), left-padded and generated
    in batches of ``batch_size``, at most ``max_new_tokens`` tokens each. The reply is read by
    :func:`parse_count`; an unparsable reply counts 0 and is tallied in ``self.unparsable`` (and
    ``self.calls`` counts the replies generated), so a judge that stopped following the format shows
    up in the logs instead of silently zeroing the process reward.
    """

    name = "llm"

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, batch_size: int = 8, doc_tokens: int = 160):
        for label, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size),
                             ("doc_tokens", doc_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{label} must be an int >= 1, got {value!r}")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size, self.doc_tokens = max_new_tokens, batch_size, doc_tokens
        self.calls = 0
        self.unparsable = 0

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: str = "cpu", dtype: str = "float32", **kw) -> "LLMJudge":
        """Load the judge model and its (left-padding) tokenizer from a local Hugging Face directory."""
        from searchr2.models import load_model, load_tokenizer, pick_device

        model = load_model(model_dir, dtype=dtype, device=pick_device(device), inference=True)
        return cls(model, load_tokenizer(model_dir), **kw)

    def prompt_ids(self, record: dict, traj) -> list[int]:
        text = judge_prompt_text(record.get("question") or traj.question, record.get("golden_answers") or [],
                                 collections_of(traj), self.tokenizer, self.doc_tokens)
        return build_chat_ids(self.tokenizer, text)

    def generate(self, prompts: list[list[int]]) -> list[str]:
        """Greedy replies to token-id prompts, batched with left padding (shortest prompts together)."""
        import torch

        tok = self.tokenizer
        eos = eos_ids(self.model, tok)
        # Greedy set explicitly, so a model's own sampling defaults cannot turn the judge stochastic.
        gen_cfg = generation_config(tok, eos, self.max_new_tokens, do_sample=False)
        drop = [s for s in getattr(tok, "all_special_tokens", []) if s not in (THINK_OPEN, THINK_CLOSE)]
        device = getattr(self.model, "device", torch.device("cpu"))
        replies: dict[int, str] = {}
        with eval_mode(self.model):
            for rows in by_length(prompts, self.batch_size):
                ids, mask = left_pad([prompts[i] for i in rows], pad_id(tok))
                width = ids.shape[1]
                with torch.inference_mode():
                    out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                              generation_config=gen_cfg)
                for r, i in enumerate(rows):
                    new = out[r, width:].tolist()
                    stop = next((n for n, t in enumerate(new) if t in eos), len(new))
                    text = tok.decode(new[:stop], skip_special_tokens=False)
                    for s in drop:
                        text = text.replace(s, "")
                    replies[i] = text
        return [replies[i] for i in range(len(prompts))]

    def judge(self, records: Sequence[dict], trajectories: Sequence) -> list[JudgeResult]:
        _check_aligned(records, trajectories)
        results: list[JudgeResult | None] = [None] * len(trajectories)
        asked, prompts = [], []
        for i, (record, traj) in enumerate(zip(records, trajectories)):
            m = len(collections_of(traj))
            if m == 0:
                results[i] = JudgeResult(useful=0, searches=0)
            else:
                asked.append(i)
                prompts.append(self.prompt_ids(record, traj))
        replies = self.generate(prompts) if prompts else []
        for i, prompt, reply in zip(asked, prompts, replies):
            m = len(collections_of(trajectories[i]))
            head = self.tokenizer.decode(prompt[-16:], skip_special_tokens=False)
            count = parse_count(reply, m, thinking=_opens_thinking(head))
            self.calls += 1
            if count is None:
                self.unparsable += 1
            results[i] = JudgeResult(useful=count or 0, searches=m, parsed=count is not None, reply=reply)
        return results  # type: ignore[return-value]

    def process_scores(self, records: Sequence[dict], trajectories: Sequence) -> list[float]:
        return [r.process for r in self.judge(records, trajectories)]

    def stats(self) -> dict:
        """Replies generated so far and how many of them were unparsable."""
        return {"calls": self.calls, "unparsable": self.unparsable}


# ------------------------------------------------------------------------------------------ factory

def make_judge(cfg) -> Judge:
    """The judge named by ``cfg.judge`` (a :class:`searchr2.reward.RewardConfig` or anything with its
    ``judge*`` attributes): ``rule`` needs nothing; ``llm`` loads ``cfg.judge_model``."""
    kind = getattr(cfg, "judge", None)
    if kind == "rule":
        return RuleJudge()
    if kind == "llm":
        model_dir = getattr(cfg, "judge_model", "") or ""
        if not model_dir:
            raise ValueError("reward.judge=llm needs reward.judge_model: a local Hugging Face model directory "
                             "(e.g. a download of DeepSeek-R1-Distill-Qwen-7B); or use reward.judge=rule")
        if not (Path(model_dir) / "config.json").exists():
            raise FileNotFoundError(f"reward.judge_model={model_dir!r} is not a model directory (no config.json)")
        return LLMJudge.from_dir(model_dir, device=cfg.judge_device, dtype=cfg.judge_dtype,
                                 max_new_tokens=cfg.judge_max_new_tokens, batch_size=cfg.judge_batch_size,
                                 doc_tokens=cfg.judge_doc_tokens)
    raise ValueError(f"reward.judge must be one of {', '.join(JUDGES)}, got {kind!r}")
