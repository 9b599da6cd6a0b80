"""The hybrid reward of Search-R2 (arXiv 2602.03647; docs/method.md#hybrid-reward): outcome, gated by
correctness, plus information density.

For one trajectory of a QA record:

* ``r_outcome = EM(prediction, golden_answers)`` in {0, 1} (SQuAD-normalised exact match,
  :func:`searchr2.metrics.exact_match`; no ``<answer>`` means no prediction, so 0);
* ``r_process = (1/M) * sum(u_i)`` over the trajectory's ``M`` search calls, ``u_i`` in {0, 1} being a
  judge's verdict on the i-th call's whole top-k collection (:mod:`searchr2.judge`); 0 when M = 0;
* ``R = r_outcome * (1 + r_process)`` with the process part on, else ``R = r_outcome``.

So ``R`` is 0 for a wrong answer whatever the searches were, and in ``[1, 2]`` for a right one. The
judge is asked ONLY about trajectories whose answer is right (the paper's gate: a wrong answer
cannot earn anything by searching a lot, and the judge, an LLM in the paper, is not paid for).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from searchr2.judge import JUDGES, Judge, JudgeResult, make_judge
from searchr2.metrics import exact_match
from searchr2.models import DTYPES
from searchr2.params import check_types
from searchr2.protocol import normalize_question


@dataclass(frozen=True)
class RewardConfig:
    """The reward of RL rollouts and the judge of its process part (the ``reward`` params section;
    ``docs/method.md``, "Hybrid reward")."""

    process: bool = True              # true: the hybrid R = EM * (1 + r_process) of arXiv 2602.03647; false: R = EM
                                      # (Search-R1, and the Search-R1 rungs of the ablation ladder)
    judge: str = "rule"               # rule: deterministic stand-in (gold alias / supporting passage + something
                                      # new; a deviation from the paper) | llm: a causal LM counts useful collections
    judge_model: str = ""             # judge=llm: local Hugging Face model directory (paper: DeepSeek-R1-Distill-
                                      # Qwen-7B); must be "" for judge=rule
    judge_max_new_tokens: int = 64    # judge=llm: generation limit of one verdict (paper: 3000, for a reasoning model)
    judge_batch_size: int = 8         # judge=llm: judge prompts generated together (left-padded)
    judge_doc_tokens: int = 160       # judge=llm: tokens of each collection shown in the judge prompt (rest is cut)
    judge_device: str = "cpu"         # judge=llm: cpu | cuda | cuda:N | auto
    judge_dtype: str = "float32"      # judge=llm: float32 | bfloat16 | float16 (bf16 on GPU)

    def __post_init__(self):
        check_types(self, "reward config: ")

        def need(cond: bool, what: str):
            if not cond:
                raise ValueError(f"reward config: {what}")

        need(self.judge in JUDGES, f"judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if self.judge == "llm" and self.process:
            need(bool(self.judge_model.strip()), "judge=llm needs judge_model (a local Hugging Face model directory)")
        if self.judge == "rule":
            need(not self.judge_model, f"judge_model={self.judge_model!r} is set but judge=rule does not use a model "
                                       "(set judge: llm, or judge_model: \"\")")
        for name in ("judge_max_new_tokens", "judge_batch_size", "judge_doc_tokens"):
            value = getattr(self, name)
            need(value >= 1, f"{name} must be an int >= 1, got {value!r}")
        need(bool(self.judge_device), "judge_device must be a non-empty string")
        need(self.judge_dtype in DTYPES, f"judge_dtype must be one of {', '.join(DTYPES)}, got {self.judge_dtype!r}")


def hybrid_reward(outcome: float, process: float, use_process: bool = True) -> float:
    """``R = outcome * (1 + process)`` (or ``outcome`` alone), with both inputs checked."""
    if outcome not in (0.0, 1.0):
        raise ValueError(f"outcome must be 0 or 1, got {outcome!r}")
    if not 0.0 <= process <= 1.0:
        raise ValueError(f"process must be in [0, 1], got {process!r}")
    return float(outcome * (1.0 + process)) if use_process else float(outcome)


def score(records: Sequence[dict], trajectories: Sequence, cfg: RewardConfig, judge: Judge | None = None) -> list[dict]:
    """The reward of each trajectory, with what it is made of, for training and logs.

    ``records[i]`` is the QA record ``trajectories[i]`` answered (the questions must agree). The judge
    is called once, on the correct trajectories only, and not at all when ``cfg.process`` is off.
    ``judge=None`` builds one from ``cfg`` (:func:`searchr2.judge.make_judge`); build it once and pass
    it in when scoring many batches, since an LLM judge loads a model.

    Each row: ``reward`` (R), ``outcome`` (EM, 0/1), ``process`` (r_process, None when not judged),
    ``searches`` (M), ``useful`` (useful collections, None when not judged), ``judged`` (bool),
    ``parsed`` (False only when an LLM judge's reply was unparsable), ``flags`` (per-collection
    verdicts when the judge gives them, else None).
    """
    if len(records) != len(trajectories):
        raise ValueError(f"{len(records)} records but {len(trajectories)} trajectories: they must align one to one")
    for i, (record, traj) in enumerate(zip(records, trajectories)):
        if normalize_question(record["question"]) != normalize_question(traj.question):
            raise ValueError(f"record {i} ({record.get('id', '?')}) asks {record['question']!r} but its trajectory "
                             f"answered {traj.question!r}: records and trajectories are misaligned")
    outcomes = [exact_match(t.answer, r["golden_answers"]) for r, t in zip(records, trajectories)]
    judged: dict[int, JudgeResult] = {}
    if cfg.process:
        gate = [i for i, o in enumerate(outcomes) if o == 1.0]
        if gate:
            judge = judge if judge is not None else make_judge(cfg)
            results = judge.judge([records[i] for i in gate], [trajectories[i] for i in gate])
            if len(results) != len(gate):
                raise RuntimeError(f"judge {getattr(judge, 'name', judge)!r} returned {len(results)} results "
                                   f"for {len(gate)} trajectories")
            for i, res in zip(gate, results):
                m = len(trajectories[i].documents)
                if res.searches != m or not 0 <= res.useful <= m:
                    raise RuntimeError(f"judge result {res.useful}/{res.searches} does not fit a trajectory with "
                                       f"{m} searches")
                judged[i] = res
    rows = []
    for i, (traj, outcome) in enumerate(zip(trajectories, outcomes)):
        res = judged.get(i)
        process = res.process if res is not None else None
        rows.append({
            "reward": hybrid_reward(outcome, process or 0.0, res is not None),
            "outcome": outcome,
            "process": process,
            "searches": len(traj.documents),
            "useful": res.useful if res is not None else None,
            "judged": res is not None,
            "parsed": res.parsed if res is not None else True,
            "flags": res.flags if res is not None else None,
        })
    return rows


def reward_stats(rows: Sequence[dict]) -> dict:
    """Batch means for logging (docs/method.md#diagnostics).

    ``reward`` mean R; ``em`` mean outcome; ``process_correct`` mean r_process over the judged (=
    correct, with the process part on) trajectories, None when none was; ``useful_share`` useful
    collections / collections over the judged trajectories, None when they made no search;
    ``searches`` mean M over all; ``judged`` and ``unparsable`` counts.
    """
    n = len(rows)
    if n == 0:
        return {"n": 0, "reward": None, "em": None, "process_correct": None, "useful_share": None,
                "searches": None, "judged": 0, "unparsable": 0}
    judged = [r for r in rows if r["judged"]]
    collections = sum(r["searches"] for r in judged)

    def rnd(x):
        return None if x is None else round(x, 4)

    return {
        "n": n,
        "reward": rnd(sum(r["reward"] for r in rows) / n),
        "em": rnd(sum(r["outcome"] for r in rows) / n),
        "process_correct": rnd(sum(r["process"] for r in judged) / len(judged)) if judged else None,
        "useful_share": rnd(sum(r["useful"] for r in judged) / collections) if collections else None,
        "searches": rnd(sum(r["searches"] for r in rows) / n),
        "judged": len(judged),
        "unparsable": sum(1 for r in judged if not r["parsed"]),
    }
