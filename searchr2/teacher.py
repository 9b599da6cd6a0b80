"""Teachers that write warm-up trajectories in the rollout engine's exact token layout.

Two teachers:

* The **oracle** knows a question's hop chain (from the record's metadata) and plays the agent a
  competent searcher would be: it says in one short sentence what it needs, searches for it, reads
  the REAL retriever's results, and moves on only when the fact it needs is visible in them
  (within the observation's token budget). When the retriever misses, it says so and re-queries.
  It answers with the gold answer once the chain is done. On request it inserts one realistic
  mistake and recovers from it (a vague first query, or a wrong bridge entity carried into the
  next search), or writes a *corrupted* trajectory whose first flawed step is known: the labelled
  examples of the Meta-Refiner.
* The **rejection sampler**, for records without a hop chain: sample several trajectories from a
  model and keep one whose answer is exactly right.

Token layout. Each assistant turn is tokenised on its own (loss mask 1) and each environment reply
is built by :func:`searchr2.rollout.tool_output_ids`, the function the engine itself uses, so a
teacher trajectory is token for token what the engine would have produced had the model written
the teacher's text (a test drives the engine with a scripted model to check it).

Hop chains are read from three metadata formats: the embedded world's ``hops``
(``subject``/``relation``/``object``), 2WikiMultiHopQA's ``evidences`` (``[subject, relation,
object]`` triples) and MuSiQue's ``question_decomposition`` (sub-questions with ``#k`` references to
earlier answers). Anything else has no hop chain.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from searchr2.metrics import exact_match, normalize_answer
from searchr2.protocol import ANSWER_CLOSE, ANSWER_OPEN, SEARCH_CLOSE, SEARCH_OPEN, THINK_CLOSE, THINK_OPEN
from searchr2.rollout import (RolloutConfig, Trajectory, classify_turn, encode_text, finish_trajectory,
                              new_trajectory, search_batch, tool_output_ids)

#: How the teacher names a relation of the embedded world (the query word and the noun in its reasoning).
RELATION_NOUNS = {
    "birth_year": "birth year", "alma_mater": "alma mater", "founded": "founding year",
    "independence": "independence year", "language": "official language", "origin": "home city",
    "release_year": "release year", "publication_year": "publication year", "label": "record label",
    "headquarters": "headquarters city", "location": "city",
}
COMPARISON_TYPES = {"comparison", "bridge_comparison"}
MISTAKES = ("vague_query", "wrong_bridge")
CORRUPTIONS = ("wrong_query", "wrong_bridge", "wrong_answer")


class TeacherFailure(Exception):
    """The oracle could not write a correct trajectory (why: one of FAILURES)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


FAILURES = ("retriever_miss", "turn_budget", "context_cap", "turn_too_long")


class NotApplicable(Exception):
    """This mistake or corruption cannot be made for this record (a one-hop question has no bridge to
    get wrong, no distractor is at hand, or the wrong search happens to show the right fact anyway).

    Not a ``ValueError``: the warm-up builder (:mod:`searchr2.sft_data`) catches it to fall back to a
    clean trajectory or another record, and must never swallow a real error that way.
    """


@dataclass(frozen=True)
class Hop:
    """One fact to look up."""

    need: str                     # what is needed, as a noun phrase: "the spouse of Ana Varo"
    query: str                    # the search a competent agent writes for it
    retries: tuple[str, ...]      # further queries when the fact is not in the results
    found: str                    # the fact's value; the hop is done when it is visible in the results
    fact: str                     # one sentence stating the fact: "The spouse of Ana Varo is Ilo Tesk."
    subject: str = ""             # the entity the hop is about ("" when the format does not say)
    noun: str = ""                # the relation's noun ("" when the format does not say)
    relation: str = ""            # the relation's name in the data ("" when the format does not say)


@dataclass(frozen=True)
class Plan:
    """A question's hop chain and how the answer follows from it."""

    hops: tuple[Hop, ...]
    comparison: bool              # the hops are independent and the answer compares them
    answer: str                   # the answer the teacher writes (the first gold answer)
    answer_type: str = ""         # kind of answer, to draw plausible wrong answers


def _noun(relation: str) -> str:
    return RELATION_NOUNS.get(relation, relation.replace("_", " ").strip())


def _hop(subject: str, relation: str, obj: str, question: str | None) -> Hop:
    noun = _noun(relation)
    retries = (subject,) + ((question,) if question else ())
    return Hop(need=f"the {noun} of {subject}", query=f"{subject} {noun}", retries=retries, found=obj,
               fact=f"The {noun} of {subject} is {obj}.", subject=subject, noun=noun, relation=relation)


def plan_for(record: dict) -> Plan | None:
    """The hop chain of a QA record, or None when its metadata has none (see the module docstring)."""
    meta = record.get("metadata") or {}
    gold = record["golden_answers"][0]
    question = record["question"]
    kind = str(meta.get("type", ""))
    comparison = kind in COMPARISON_TYPES or "comparison" in meta
    hops: list[Hop] = []
    if isinstance(meta.get("hops"), list) and meta["hops"]:
        for i, h in enumerate(meta["hops"]):
            if not all(isinstance(h.get(k), str) and h[k] for k in ("subject", "relation", "object")):
                return None
            hops.append(_hop(h["subject"], h["relation"], h["object"], question if i == 0 else None))
    elif isinstance(meta.get("evidences"), list) and meta["evidences"]:
        for i, e in enumerate(meta["evidences"]):
            if not (isinstance(e, (list, tuple)) and len(e) == 3 and all(isinstance(x, str) and x for x in e)):
                return None
            hops.append(_hop(e[0], e[1], e[2], question if i == 0 else None))
    elif isinstance(meta.get("question_decomposition"), list) and meta["question_decomposition"]:
        answers: list[str] = []
        for step in meta["question_decomposition"]:
            sub, ans = step.get("question"), step.get("answer")
            if not (isinstance(sub, str) and isinstance(ans, str) and sub.strip() and ans.strip()):
                return None
            sub = re.sub(r"#(\d+)", lambda m: answers[int(m.group(1)) - 1] if 0 < int(m.group(1)) <= len(answers)
                         else m.group(0), sub).strip()
            sub_q = sub.rstrip("?").strip()
            hops.append(Hop(need=f"the answer to: {sub_q}", query=sub_q, retries=(), found=ans,
                            fact=f"{sub_q}? {ans}."))
            answers.append(ans)
    else:
        return None
    if not comparison and not exact_match(hops[-1].found, record["golden_answers"]):
        return None   # the chain does not end at the answer: not a chain the teacher can follow
    return Plan(hops=tuple(hops), comparison=comparison, answer=gold, answer_type=str(meta.get("answer_type", "")))


# ------------------------------------------------------------------------------- writing turns

def _visible(value: str, observation: str) -> bool:
    """Is ``value`` in the observation as whole words (after SQuAD normalisation)?"""
    v = normalize_answer(value)
    return bool(v) and f" {v} " in f" {normalize_answer(observation)} "


class _Script:
    """Builds one trajectory turn by turn, with the engine's own tool outputs and real retrieval."""

    def __init__(self, tokenizer, retriever, question: str, cfg: RolloutConfig):
        self.tok, self.retriever, self.cfg = tokenizer, retriever, cfg
        self.traj = new_trajectory(tokenizer, question)

    @property
    def can_search(self) -> bool:
        return self.traj.turns < self.cfg.max_turns

    def _turn(self, text: str, action: str, trained: bool) -> None:
        ids = encode_text(self.tok, text)
        if len(ids) > self.cfg.max_new_tokens:   # the Actor could never write this turn in a rollout
            raise TeacherFailure("turn_too_long")
        final = self.traj.turns >= self.cfg.max_turns
        got, _ = classify_turn(self.tok.decode(ids, skip_special_tokens=False), final)
        if got != action:  # a teacher bug (e.g. an empty query), never bad data
            raise AssertionError(f"teacher turn {text!r} reads as {got!r}, not {action!r}")
        self.traj.add_turn(ids, action)
        if not trained:
            start = self.traj.steps[-1]["start"]
            self.traj.loss_mask[start:] = [0] * (len(self.traj.loss_mask) - start)
        if len(self.traj.token_ids) > self.cfg.max_context_tokens:
            raise TeacherFailure("context_cap")

    def search(self, think: str, query: str, trained: bool = True) -> str:
        """Write a search turn, run the query on the real retriever; return the observation text."""
        if not self.can_search:
            raise TeacherFailure("turn_budget")
        self._turn(f"{THINK_OPEN}{think}{THINK_CLOSE}\n{SEARCH_OPEN}{query}{SEARCH_CLOSE}", "search", trained)
        docs = search_batch(self.retriever, [query], self.cfg.top_k, self.cfg)[0]
        ids = tool_output_ids(self.tok, docs, self.traj.turns, self.cfg)
        self.traj.add_tool_output(ids, query, docs)
        if len(self.traj.token_ids) > self.cfg.max_context_tokens:
            raise TeacherFailure("context_cap")
        return self.tok.decode(ids, skip_special_tokens=False)

    def answer(self, think: str, answer: str) -> Trajectory:
        self._turn(f"{THINK_OPEN}{think}{THINK_CLOSE}\n{ANSWER_OPEN}{answer}{ANSWER_CLOSE}", "answer", True)
        finish_trajectory(self.traj, "answer", self.tok)
        return self.traj


def _look_up(script: _Script, hop: Hop, lead: str) -> str:
    """Search for one hop until its fact is visible; ``lead`` opens the first turn's reasoning.

    Returns the reasoning that opens the next turn (the fact found). A miss is said out loud and
    followed by the hop's next query; running out of queries or turns fails the trajectory.
    """
    think = f"{lead}I need {hop.need}."
    for query in (hop.query,) + tuple(q for q in hop.retries if q != hop.query):
        observation = script.search(think, query)
        if _visible(hop.found, observation):
            return hop.fact
        think = f"The results do not give {hop.need}. I will search again with a different query."
    raise TeacherFailure("retriever_miss")


def _fact_with(hop: Hop, value: str) -> str:
    """The hop's fact sentence with another value in place of the true one (for mistakes)."""
    if hop.noun and hop.subject:
        return f"The {hop.noun} of {hop.subject} is {value}."
    return hop.fact.replace(hop.found, value) if hop.found in hop.fact else f"{value}."


def _final_think(plan: Plan, facts: list[str]) -> str:
    return " ".join(facts) if plan.comparison else facts[-1]


def oracle_trajectory(plan: Plan, question: str, tokenizer, retriever, cfg: RolloutConfig,
                      mistake: str | None = None, rng: random.Random | None = None,
                      distractors: list[str] = (), train_on_mistake: bool = False) -> Trajectory:
    """A correct trajectory for ``plan``, optionally with one mistake and its recovery.

    ``mistake`` is None, ``"vague_query"`` (the first search leaves out the entity) or
    ``"wrong_bridge"`` (a wrong entity, drawn from ``distractors``, is carried from one hop of a
    chain into the next search). The mistaken turn is loss-masked unless ``train_on_mistake``.
    Raises :class:`TeacherFailure` when the retriever never shows a needed fact or the turn budget
    runs out; a mistake that cannot be made (its results happen to contain the fact, a one-hop
    question for wrong_bridge) raises :class:`NotApplicable` so the caller can pick another record.
    An unknown ``mistake`` is a ``ValueError``.
    """
    rng = rng or random.Random(0)
    script = _Script(tokenizer, retriever, question, cfg)
    chain = not plan.comparison and len(plan.hops) > 1
    bad_at = None
    if mistake == "vague_query":
        bad_at = 0
    elif mistake == "wrong_bridge":
        if not chain or not distractors:
            raise NotApplicable("wrong_bridge needs a chain of two or more hops and distractor names")
        bad_at = rng.randrange(1, len(plan.hops))
    elif mistake is not None:
        raise ValueError(f"unknown mistake {mistake!r}; use one of {', '.join(MISTAKES)}")

    facts: list[str] = []
    lead = ""
    for h, hop in enumerate(plan.hops):
        if h == bad_at:
            if mistake == "vague_query":
                observation = script.search(f"{lead}I need {hop.need}.", hop.noun or hop.query.split()[-1],
                                            trained=train_on_mistake)
                if _visible(hop.found, observation):
                    raise NotApplicable("the vague query found the fact anyway")
                lead = (f"These results are not about {hop.subject or hop.need}. "
                        f"I should name it in the query. ")
            else:
                wrong = rng.choice([d for d in distractors if normalize_answer(d) != normalize_answer(hop.subject)])
                prev = plan.hops[h - 1]
                observation = script.search(f"{_fact_with(prev, wrong)} Next, I need the {hop.noun} of {wrong}.",
                                            f"{wrong} {hop.noun}".strip(), trained=train_on_mistake)
                if _visible(hop.found, observation):
                    raise NotApplicable("the wrong bridge found the fact anyway")
                lead = f"That was a mistake: {prev.fact} "
        facts.append(_look_up(script, hop, lead))
        lead = f"{facts[-1]} Next, " if h + 1 < len(plan.hops) else ""
    return script.answer(_final_think(plan, facts), plan.answer)


def corrupted_trajectory(plan: Plan, question: str, tokenizer, retriever, cfg: RolloutConfig, corruption: str,
                         rng: random.Random, distractors: list[str], wrong_answers: list[str]) -> tuple[Trajectory, int]:
    """A trajectory whose first flawed step is known; returns it and that step (1-based turn).

    ``wrong_query``: one search asks about a wrong entity, and the agent then asserts a fact it
    never saw and answers wrongly. ``wrong_bridge``: a chain's bridge is misread (a wrong entity
    carried into the next search), then a wrong answer. ``wrong_answer``: every search is right but
    the final answer is wrong. Steps before the flaw are the oracle's, so they are correct.
    Raises :class:`NotApplicable` when the corruption does not apply to this plan, :class:`TeacherFailure`
    as the oracle, ``ValueError`` for an unknown ``corruption``.
    """
    wrong_answers = [a for a in wrong_answers if not exact_match(a, [plan.answer])]
    distractors = [d for d in distractors if all(normalize_answer(d) != normalize_answer(h.subject)
                                                 for h in plan.hops)]
    if not wrong_answers:
        raise NotApplicable("no wrong answer to use")
    wrong_final = rng.choice(wrong_answers)
    chain = not plan.comparison and len(plan.hops) > 1
    if corruption == "wrong_query":
        bad_at = rng.randrange(len(plan.hops))
    elif corruption == "wrong_bridge":
        if not chain:
            raise NotApplicable("wrong_bridge needs a chain of two or more hops")
        bad_at = rng.randrange(1, len(plan.hops))
    elif corruption == "wrong_answer":
        bad_at = len(plan.hops)
    else:
        raise ValueError(f"unknown corruption {corruption!r}; use one of {', '.join(CORRUPTIONS)}")
    if corruption != "wrong_answer" and not distractors:
        raise NotApplicable("no distractor names")

    script = _Script(tokenizer, retriever, question, cfg)
    facts: list[str] = []
    lead = ""
    for h, hop in enumerate(plan.hops[:bad_at]):
        facts.append(_look_up(script, hop, lead))
        lead = f"{facts[-1]} Next, "
    if corruption == "wrong_answer":
        think = _final_think(plan, facts) if plan.comparison else _fact_with(plan.hops[-1], wrong_final)
        script.answer(think, wrong_final)
        return script.traj, script.traj.turns
    hop = plan.hops[bad_at]
    wrong = rng.choice(distractors)
    if corruption == "wrong_query":
        observation = script.search(f"{lead}I need {hop.need}.", f"{wrong} {hop.noun}".strip())
    else:
        prev = plan.hops[bad_at - 1]
        observation = script.search(f"{_fact_with(prev, wrong)} Next, I need the {hop.noun} of {wrong}.",
                                    f"{wrong} {hop.noun}".strip())
    if _visible(hop.found, observation):
        raise NotApplicable("the corrupted search found the right fact anyway")
    flawed_step = script.traj.turns
    script.answer(f"The {hop.noun or 'answer'} is {wrong_final}.", wrong_final)
    return script.traj, flawed_step


def rejection_sample(records: list[dict], sample_fn: Callable[[list[str]], list[Trajectory]],
                     samples: int) -> dict[str, Trajectory]:
    """For records without a hop chain: ``samples`` sampled trajectories each; keep the first with EM 1.

    ``sample_fn(questions)`` returns one finished trajectory per question (e.g. a sampling rollout of
    a model). Returns record id -> kept trajectory (records with no correct sample are absent).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    questions = [r["question"] for r in records for _ in range(samples)]
    trajs = sample_fn(questions) if questions else []
    if len(trajs) != len(questions):
        raise ValueError(f"sample_fn returned {len(trajs)} trajectories for {len(questions)} questions")
    kept: dict[str, Trajectory] = {}
    for n, record in enumerate(records):
        for t in trajs[n * samples:(n + 1) * samples]:
            if t.finished and exact_match(t.answer, record["golden_answers"]):
                kept[record["id"]] = t
                break
    return kept
