"""Scoring systems on the seven eval sets: per-question predictions and per-set EM / F1 / cover-EM.

A *system* is a way of answering: ``direct`` and ``rag`` (the one-shot baselines of
:mod:`searchr2.baselines`, answer-only as the paper ran them; ``direct_tagged`` and ``rag_tagged`` ask
for answer tags instead) and ``agent_<model>`` (the multi-turn search agent of
:mod:`searchr2.rollout` with one of the pipeline's models). Evaluation is always greedy, Actor only,
as in the paper. Scores are reported ×100, like the paper's tables, and the average is the plain
mean over the sets (each set counts once, whatever its size).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from searchr2.baselines import SYSTEMS as BASELINE_SYSTEMS
from searchr2.io import InputError, read_jsonl
from searchr2.metrics import cover_exact_match, exact_match, f1_score
from searchr2.params import check_types
from searchr2.paths import MODEL_NAMES
from searchr2.refiner import RefinerConfig, accuracy, decision_distributions
from searchr2.rollout import RolloutConfig, Trajectory
from searchr2.stats import average_interval, decode_scores, encode_scores, questions_digest

METRICS = ("em", "f1", "cover_em")
BASELINES = tuple(BASELINE_SYSTEMS)   # direct, rag (the paper's rows), direct_tagged, rag_tagged


def system_model(system: str) -> str:
    """The model a system answers with: the baselines use the base model, ``agent_<model>`` its model."""
    return "base" if system in BASELINES else system.removeprefix("agent_")


@dataclass(frozen=True)
class EvalConfig:
    """What the evaluate stage scores (greedy, the Actor alone, EM / F1 / cover-EM per eval set), and on how
    many questions (the ``evaluate`` params section)."""

    max_questions: int | None = 90   # first N questions of each eval set (deterministic); null = the whole set
    systems: tuple[str, ...] = ("direct", "rag", "agent_sft", "agent_rl")  # also direct_tagged, rag_tagged,
                                     # agent_base (docs/method.md#evaluation)
    chunk_size: int = 256            # questions handed to the engine at once, the sets pooled in their order
                                     # (progress granularity; the engine batches them by rollout.batch_size)
    device: str = "cpu"              # cpu | cuda | auto
    dtype: str = "auto"              # auto | float32 | bfloat16 | float16. auto: bfloat16 where the device has
                                     # native bf16 matmuls (CPU with AMX or AVX512-BF16, CUDA), else float32
                                     # (searchr2.models.resolve_dtype; measured in docs/measurements.md,
                                     # "Evaluation in bfloat16")
    bootstrap_samples: int = 2000    # resamples of the questions for the 95% intervals (stage metrics;
                                     # searchr2/stats.py)
    bootstrap_seed: int = 0          # seed of those resamples

    def __post_init__(self):
        check_types(self, "evaluate.")
        if self.max_questions is not None and self.max_questions < 1:
            raise ValueError(f"evaluate.max_questions must be >= 1 or null, got {self.max_questions}")
        for s in self.systems:
            if s not in BASELINES and not (s.startswith("agent_") and system_model(s) in MODEL_NAMES):
                raise ValueError(f"unknown system {s!r}: use {', '.join(BASELINES)}, agent_base, agent_sft or "
                                 "agent_rl")
        if len(set(self.systems)) != len(self.systems):
            raise ValueError(f"evaluate.systems lists a system twice: {list(self.systems)}")
        if self.chunk_size < 1:
            raise ValueError(f"evaluate.chunk_size must be >= 1, got {self.chunk_size}")
        if self.bootstrap_samples < 1:
            raise ValueError(f"evaluate.bootstrap_samples must be >= 1, got {self.bootstrap_samples}")


def score_row(record: dict, traj: Trajectory, tokenizer) -> dict:
    """One prediction row: the question, the gold, what the system said, and its scores."""
    pred, gold = traj.answer, record["golden_answers"]
    return {
        "id": record["id"], "question": record["question"], "golden_answers": gold, "prediction": pred,
        "em": exact_match(pred, gold), "f1": f1_score(pred, gold), "cover_em": cover_exact_match(pred, gold),
        "trajectory": traj.response_text(tokenizer), "searches": traj.searches, "turns": traj.turns,
        "stop_reason": traj.stop_reason, "generated_tokens": int(sum(traj.loss_mask)),
    }


def set_scores(rows: list[dict]) -> dict:
    """One eval set's scores from its prediction rows: EM, F1, cover-EM ×100, answer rate, mean searches and
    turns, and the per-question EMs with a digest of the question ids (for the intervals and paired
    comparisons of :mod:`searchr2.stats`, computed by stage metrics)."""
    n = len(rows)
    out = {m: round(100 * sum(r[m] for r in rows) / n, 2) for m in METRICS}
    out.update(n=n, answered=round(sum(r["prediction"] is not None for r in rows) / n, 4),
               searches=round(sum(len(r["searches"]) for r in rows) / n, 3),
               turns=round(sum(r["turns"] for r in rows) / n, 3),
               em_by_question=encode_scores([r["em"] for r in rows]),
               questions_sha=questions_digest([r["id"] for r in rows]))
    return out


def average(per_set: dict[str, dict]) -> dict:
    """Unweighted mean of the sets' scores (the paper's "Avg" column)."""
    return {m: round(sum(s[m] for s in per_set.values()) / len(per_set), 2) for m in METRICS}


def with_intervals(per_set: dict[str, dict], samples: int, seed: int) -> dict[str, dict]:
    """One system's scores with the 95% bootstrap interval of each set's EM and of the average
    (``em_ci95``, ×100) added, from the sets' ``em_by_question``; a system scored before those were
    recorded is returned unchanged."""
    sets = {k: v for k, v in per_set.items() if k != "avg" and isinstance(v, dict)}
    if not sets or any("em_by_question" not in v for v in sets.values()):
        return per_set
    scores = {k: decode_scores(v["em_by_question"], f"{k}.em_by_question") for k, v in sets.items()}
    out = {k: {**v, "em_ci95": average_interval({k: scores[k]}, samples, seed)} for k, v in sets.items()}
    if isinstance(per_set.get("avg"), dict):
        out["avg"] = {**per_set["avg"], "em_ci95": average_interval(scores, samples, seed)}
    return out


def run_system(answer_fn, sets: dict[str, list[dict]], tokenizer, chunk_size: int, desc: str):
    """Answer every set with ``answer_fn(questions) -> trajectories``; return rows, summaries, timing.

    The sets' questions are pooled (in set order) and handed over ``chunk_size`` at a time, so the engine
    fills its generation batches across sets: fewer, fuller batches answer faster (one decoding step of
    SmolLM2 on 2 cores: 111 ms for 16 rows, 276 ms for 64; docs/measurements.md, "Rollout speed")."""
    summary, generated, start = {}, 0, time.perf_counter()
    pooled = [(name, record) for name, records in sets.items() for record in records]
    rows_by_set: dict[str, list[dict]] = {name: [] for name in sets}
    with tqdm(total=len(pooled), desc=desc, unit="q") as bar:
        for k in range(0, len(pooled), chunk_size):
            chunk = pooled[k:k + chunk_size]
            trajs = answer_fn([record["question"] for _, record in chunk])
            for (name, record), traj in zip(chunk, trajs):
                rows_by_set[name].append(score_row(record, traj, tokenizer))
            bar.update(len(chunk))
    total = len(pooled)
    for name, rows in rows_by_set.items():
        summary[name] = set_scores(rows)
        generated += sum(r["generated_tokens"] for r in rows)
    seconds = time.perf_counter() - start
    summary["avg"] = average({k: v for k, v in summary.items()})
    timing = {"seconds": round(seconds, 2), "questions": total, "questions_per_s": round(total / seconds, 4),
              "generated_tokens": generated, "generated_tokens_per_s": round(generated / seconds, 2)}
    return rows_by_set, summary, timing


def greedy(cfg: RolloutConfig) -> RolloutConfig:
    """Evaluation decodes greedily whatever the training rollouts do."""
    return dataclasses.replace(cfg, do_sample=False)


def load_labelled_meta_prompts(path: Path) -> list[dict]:
    """Held-out Meta-Refiner examples (stage sft_data): meta prompt ids + the answer token, and the label."""
    records = []
    for line, record in read_jsonl(path):
        for name in ("token_ids", "label", "n_steps"):
            if name not in record:
                raise InputError(path, "missing", line=line, field=name)
        if not isinstance(record["label"], int) or not 0 <= record["label"] <= record["n_steps"]:
            raise InputError(path, f"must be an int in 0..n_steps={record['n_steps']}, got {record['label']!r}",
                             line=line, field="label")
        records.append(record)
    return records


def score_refiner(model, tokenizer, records: list[dict], cfg: RefinerConfig, batch_size: int = 8) -> dict:
    """The Meta-Refiner's accuracy at finding the first flawed step of labelled trajectories."""
    start = time.perf_counter()
    probs = decision_distributions(model, tokenizer, [r["token_ids"][:-1] for r in records],
                                   [r["n_steps"] for r in records], batch_size)
    return {**accuracy(probs, [r["label"] for r in records], cfg), "seconds": round(time.perf_counter() - start, 2)}


def merge_model_results(parts: dict[str, dict], systems: tuple[str, ...], where: dict[str, Path],
                        refiner: dict[str, dict] | None = None, bootstrap: tuple[int, int] = (2000, 0)) -> dict:
    """One metrics table from the per-model evaluations: ``{system: {set: scores}}`` in ``systems``'
    order, with the 95% intervals of :func:`with_intervals` (``bootstrap``: samples, seed), plus
    ``refiner: {model: accuracy}``. ``parts[model]`` is what the evaluate stage wrote for that model;
    ``refiner[model]`` what stage evaluate_refiner wrote (empty: nothing scored, left out). A listed
    system missing from its model's part is an :class:`InputError` naming that part's file
    (``where[model]``)."""
    merged = {}
    for system in systems:
        model = system_model(system)
        part = parts.get(model) or {}
        if system not in part:
            raise InputError(where[model], f"no results for {system!r}; rerun `dvc repro evaluate@{model}`",
                             field=system)
        merged[system] = with_intervals(part[system], *bootstrap)
    scored = {model: (refiner or {}).get(model) for model in MODEL_NAMES}
    return {**merged, "refiner": {model: acc for model, acc in scored.items() if acc}}


#: the Meta-Refiner numbers worth a column in ``dvc exp show`` (the rest stay in results/metrics.json)
SUMMARY_REFINER = ("auc", "exact")


def summarize(merged: dict) -> dict:
    """The headline numbers of a merged table, the ones experiments are compared on and the only ones
    DVC declares as metrics, so that ``dvc exp show`` prints a readable table: ``em: {system: {set:
    EM, avg: EM}}`` (the average the evaluation computed), ``questions: {set: n}`` and
    ``refiner: {model: {auc, exact}}``. F1, cover-EM, search counts and timings stay in the full table."""
    em, questions = {}, {}
    for system, per_set in merged.items():
        if system == "refiner" or not isinstance(per_set, dict):
            continue
        sets = {name: s for name, s in per_set.items() if name != "avg" and isinstance(s, dict) and "em" in s}
        em[system] = {name: s["em"] for name, s in sets.items()}
        if isinstance(per_set.get("avg"), dict) and "em" in per_set["avg"]:
            em[system]["avg"] = per_set["avg"]["em"]
        for name, s in sets.items():
            questions.setdefault(name, set()).add(s.get("n"))
    refiner = {model: {k: acc[k] for k in SUMMARY_REFINER if k in acc}
               for model, acc in (merged.get("refiner") or {}).items()}
    # the systems of one run answer the same questions; if they ever did not, every count is kept
    counts = {name: (next(iter(ns)) if len(ns) == 1 else sorted(n for n in ns if n is not None))
              for name, ns in questions.items()}
    return {"em": em, "questions": counts, "refiner": refiner}
