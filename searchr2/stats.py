"""How sure a table's numbers are: bootstrap intervals over questions, alone and paired.

Each eval set's exact match is the mean of one 0/1 score per question, and a table's "Avg" is the
plain mean of the sets' EMs (the paper's Avg column, :func:`searchr2.evaluation.average`). The
uncertainty that matters is which questions happened to be asked, so the intervals here are
percentile bootstraps over questions, stratified by set: every resample draws each set's questions
with replacement (as many as it has), recomputes each set's EM and their mean. ×100, as the tables.

*Paired*: two systems (or two experiments) scored on the same questions. Resampling the questions,
not each system's scores separately, gives the interval of the difference of averages. It is far
narrower than comparing two independent intervals, because most questions are answered alike by both
(Efron & Tibshirani, *An Introduction to the Bootstrap*, ch. 13 for the percentile interval).

Per-question scores travel with the metrics as a string of ``0``/``1`` per set (``em_by_question``,
:func:`encode_scores`) together with a digest of the question ids (``questions_sha``), so a paired
comparison can refuse two runs that did not ask the same questions.

Hand-written rather than ``scipy.stats.bootstrap``: the stratified, multi-set, paired statistic is a
few lines of numpy, and scipy is not otherwise a dependency.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

LEVEL = 0.95


def encode_scores(scores: Sequence[float]) -> str:
    """0/1 scores as a compact string (``"0110"``); anything else is refused."""
    if any(s not in (0, 1) for s in scores):
        raise ValueError("per-question scores must be 0 or 1 to be encoded")
    return "".join("1" if s else "0" for s in scores)


def decode_scores(text: str, where: str = "em_by_question") -> np.ndarray:
    """The inverse of :func:`encode_scores`; a clear error naming ``where`` for any other character."""
    if not isinstance(text, str) or set(text) - {"0", "1"}:
        raise ValueError(f"{where}: expected a string of 0 and 1, got {str(text)[:40]!r}")
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")


def questions_digest(ids: Sequence[str]) -> str:
    """A short digest of the question ids, in order: equal digests mean the same questions."""
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def _check(by_set: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    if not by_set:
        raise ValueError("no eval set to bootstrap over")
    out = {}
    for name, scores in by_set.items():
        arr = np.asarray(scores, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"set {name}: needs at least one per-question score")
        out[name] = arr
    return out


def _resampled_averages(by_set: dict[str, np.ndarray], samples: int, seed: int) -> np.ndarray:
    """``samples`` bootstrap replicates of the mean over sets of each set's mean (sets in sorted order,
    so the result does not depend on the dict's order)."""
    if samples < 1:
        raise ValueError(f"bootstrap samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    total = np.zeros(samples)
    for name in sorted(by_set):
        scores = by_set[name]
        idx = rng.integers(0, scores.size, size=(samples, scores.size))
        total += scores[idx].mean(axis=1)
    return total / len(by_set)


def _interval(replicates: np.ndarray) -> list[float]:
    lo, hi = np.quantile(replicates, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [round(100 * float(lo), 2), round(100 * float(hi), 2)]


def average_interval(by_set: Mapping[str, Sequence[float]], samples: int, seed: int) -> list[float]:
    """The 95% percentile interval of the average over sets (×100), resampling questions within sets."""
    return _interval(_resampled_averages(_check(by_set), samples, seed))


def paired_difference(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], samples: int,
                      seed: int) -> dict:
    """Average of ``a`` minus average of ``b`` over the same questions, with its 95% interval (×100).

    ``a`` and ``b`` map the same sets to per-question scores in the same question order. Returns
    ``{"diff", "ci95", "n", "a_better", "b_better"}``: the last two count questions one system got right
    and the other not (the discordant pairs the difference comes from).
    """
    a, b = _check(a), _check(b)
    if sorted(a) != sorted(b):
        raise ValueError(f"the two sides cover different sets: {sorted(a)} vs {sorted(b)}")
    for name in a:
        if a[name].size != b[name].size:
            raise ValueError(f"set {name}: {a[name].size} vs {b[name].size} questions; a paired comparison "
                             "needs the same questions on both sides")
    diff = {name: a[name] - b[name] for name in a}
    point = float(np.mean([d.mean() for d in diff.values()]))
    return {"diff": round(100 * point, 2), "ci95": _interval(_resampled_averages(diff, samples, seed)),
            "n": {name: int(d.size) for name, d in sorted(diff.items())},
            "a_better": int(sum((d > 0).sum() for d in diff.values())),
            "b_better": int(sum((d < 0).sum() for d in diff.values()))}


def interval_text(ci: Sequence[float] | None) -> str:
    """``[lo, hi]`` as a table cell."""
    return "–" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"
