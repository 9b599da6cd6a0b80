"""Answer metrics: exact match, token F1 and cover exact match, SQuAD style as in Search-R1
(docs/method.md#answer-metrics).

These are the numbers every table of the project reports, so they follow the normalisation that
Search-R1 (and SQuAD before it) uses, to stay comparable with the published rows:

1. lowercase;
2. drop ASCII punctuation (``string.punctuation``);
3. drop the articles ``a``, ``an``, ``the`` as whole words;
4. collapse runs of whitespace to one space and strip the ends.

Deliberate consequences of following SQuAD exactly:

* Accents are NOT stripped: ``"Café"`` normalises to ``"café"``, which differs from ``"cafe"``.
  Accented letters are letters, not punctuation.
* Only ASCII punctuation is removed; typographic marks such as ``’`` or ``—`` stay.

Guards (so that an extraction bug cannot silently look like a wrong answer, and a data bug cannot
silently look like a right one): a prediction of ``None`` or only whitespace scores 0.0; the gold
answers must be a list or tuple of strings (a bare string raises ``TypeError``, because iterating it
would compare against single characters) and must not be empty (``ValueError``).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_answer expects a str, got {type(text).__name__}")
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(golden_answers: Sequence[str]) -> list[str]:
    if isinstance(golden_answers, (str, bytes)) or not isinstance(golden_answers, (list, tuple)):
        raise TypeError(f"golden_answers must be a list of strings, got {type(golden_answers).__name__}"
                        + (" (wrap a single answer in a list)" if isinstance(golden_answers, str) else ""))
    if not golden_answers:
        raise ValueError("golden_answers is empty: a question needs at least one gold answer")
    for gold in golden_answers:
        if not isinstance(gold, str):
            raise TypeError(f"every gold answer must be a str, got {type(gold).__name__}: {gold!r}")
    return list(golden_answers)


def _prediction(prediction: str | None) -> str | None:
    """The prediction, or None when it cannot score (None, empty, whitespace only)."""
    if prediction is None:
        return None
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str or None, got {type(prediction).__name__}")
    return prediction if prediction.strip() else None


def _scorable(prediction: str | None, golden_answers: Sequence[str]) -> tuple[str | None, list[str]]:
    """What every metric starts from: the normalised prediction (None when it cannot score) and the
    checked gold answers, not yet normalised. The gold answers are checked first, so a data bug is
    reported even when the prediction is empty."""
    golds = _golds(golden_answers)
    pred = _prediction(prediction)
    return (None if pred is None else normalize_answer(pred)), golds


def exact_match(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    norm, golds = _scorable(prediction, golden_answers)
    if norm is None:
        return 0.0
    return 1.0 if any(norm == normalize_answer(g) for g in golds) else 0.0


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """Token-level F1 between the normalised prediction and the best-matching gold answer."""
    norm, golds = _scorable(prediction, golden_answers)
    if norm is None:
        return 0.0
    pred_tokens = norm.split()
    return max(_f1(pred_tokens, normalize_answer(g).split()) for g in golds)


def cover_exact_match(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """1.0 when some normalised gold answer occurs in the normalised prediction as whole tokens.

    "Whole tokens" means a contiguous run of the prediction's words: gold ``"paris"`` covers
    ``"it is paris"`` but not ``"parisian"``. A gold answer that normalises to nothing (e.g. ``"The"``)
    is skipped, since the empty sequence would trivially be contained in every prediction.
    """
    norm, golds = _scorable(prediction, golden_answers)
    if norm is None:
        return 0.0
    words = norm.split()
    for gold in golds:
        target = normalize_answer(gold).split()
        if not target:
            continue
        n = len(target)
        if any(words[i:i + n] == target for i in range(len(words) - n + 1)):
            return 1.0
    return 0.0
