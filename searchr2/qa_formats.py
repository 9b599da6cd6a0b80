"""The published QA file schemas the paper profile reads, told apart per file by their columns, and
turned row by row into FlashRAG records with a record of where every field came from.

Two schemas are in circulation for the benchmarks the paper evaluates on:

FlashRAG (Jin et al., arXiv 2405.13576; the hub dataset ``RUC-NLPIR/FlashRAG_datasets``)
    One record a question: ``{"id", "question", "golden_answers": [str, ...], "metadata": {...}}``.
    This is also the pipeline's own format, so rows pass through :func:`searchr2.data.validate_qa_record`
    unchanged; ``golden_answers`` given as a single string is one answer.

Search-R1 / verl (Jin et al., arXiv 2503.09516; its ``scripts/data_process/*.py`` and the files the
Search-R1 family publishes, e.g. ``PeterJinGo/nq_hotpotqa_train``)
    The RL trainer's row: ``data_source`` (the benchmark), ``prompt`` (a chat list whose user message
    wraps the question in an instruction template, sometimes after a system message), ``ability``,
    ``reward_model`` (``{"style": "rule", "ground_truth": ...}``) and ``extra_info`` (``split``,
    ``index`` and, in some converters, ``question`` and the answers). Search-R1's own converter builds
    these with ``datasets.map`` and so keeps FlashRAG's columns beside them (``id``, ``question``,
    ``golden_answers``, ``metadata``); verl's re-packaging of the same files drops ``id`` and tags
    ``data_source`` as ``searchR1_<name>``.

Detection (:func:`detect_schema`) looks only at the column names: any of ``prompt``,
``reward_model``, ``extra_info``, ``ability`` makes a file Search-R1 (``search-r1+flashrag`` when a
``question`` or ``golden_answers`` column is there too); otherwise any of ``id``, ``question``,
``golden_answers`` makes it FlashRAG; anything else is refused.

Reading a Search-R1 row (:func:`search_r1_record`):

* Question: the ``question`` column, else ``extra_info.question``, else the prompt's user message,
  from a single ``Question: ...`` line that ends the message (:func:`question_from_prompt`); when none
  of these is unambiguous the row fails on field ``prompt``. Search-R1's converter rewrites every
  question before building the prompt (strips it, appends ``?`` when missing) and, through
  ``datasets.map``, writes the rewrite back into the ``question`` column too. Where two fields differ
  exactly by that rewrite the unrewritten one is kept and the row counted in ``questions_rewritten``;
  any other disagreement between two explicit fields fails (a prompt that disagrees is only counted).
  Rows whose every field shows the same question ending in ``?`` are counted in
  ``questions_maybe_rewritten``: their ``?`` may be the converter's, which the file cannot tell.
* Answers: explicit lists first, in this order: ``golden_answers``, ``reward_model.ground_truth``
  (a list, or ``{"target": [...]}``), ``extra_info.golden_answers|answers|answer|target|ground_truth``.
  All lists present must agree (as sets), and every answer given as one string must be one of the
  chosen answers or contain them all (a joined list). A string alone is one answer unless it holds a
  separator (``,`` ``;`` ``|``): such a string is never split, it fails as ambiguous.
* Id: the ``id`` column, else ``<data_source>_<extra_info.split>_<extra_info.index>``, else
  ``row_<n>`` (the row's 0-based position in the split's files).

:class:`SourceStats` records, per source file, what was detected and done; its :meth:`~SourceStats.as_dict`
is what the world stage's manifest carries.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from searchr2.io import InputError, require_id

FLASHRAG = "flashrag"
SEARCH_R1 = "search-r1"
SEARCH_R1_WITH_FLASHRAG = "search-r1+flashrag"

#: Columns only a verl/Search-R1 training row has.
VERL_COLUMNS = frozenset({"prompt", "reward_model", "extra_info", "ability"})
#: Columns of a FlashRAG record (``metadata`` is optional and says nothing on its own).
FLASHRAG_COLUMNS = frozenset({"id", "question", "golden_answers"})
#: Prefixes converters put before a benchmark's name in ``data_source`` (verl's Search-R1 re-packaging).
DATA_SOURCE_TAGS = ("searchR1_",)
#: Characters that may join several answers in one string; such a string is never split.
ANSWER_SEPARATORS = (",", ";", "|")
#: ``extra_info`` keys that may hold the answers, in the order they are preferred.
EXTRA_ANSWER_KEYS = ("golden_answers", "answers", "answer", "target", "ground_truth")

_QUESTION_MARK_RE = re.compile(r"(?:^|(?<=\s))Question:[ \t]*")


def detect_schema(columns: Iterable[str], path: str) -> str:
    """The schema of a file with these column names: ``flashrag``, ``search-r1`` or
    ``search-r1+flashrag`` (see the module doc); an :class:`InputError` on ``path`` otherwise."""
    cols = set(columns)
    if cols & VERL_COLUMNS:
        return SEARCH_R1_WITH_FLASHRAG if cols & {"question", "golden_answers"} else SEARCH_R1
    if cols & FLASHRAG_COLUMNS:
        return FLASHRAG
    raise InputError(path, f"unrecognised QA schema (columns: {', '.join(sorted(cols)) or 'none'}); expected "
                     "FlashRAG (id, question, golden_answers, metadata) or Search-R1/verl (data_source, "
                     "prompt, ability, reward_model, extra_info)")


def dataset_of(data_source: str) -> str:
    """The benchmark a ``data_source`` value names: stripped, converter tags such as ``searchR1_`` removed."""
    name = data_source.strip()
    for tag in DATA_SOURCE_TAGS:
        if name.startswith(tag):
            name = name[len(tag):]
    return name


@dataclass
class SourceStats:
    """What reading one source file (or hub split) for one dataset/split found and did.

    Counters are filled as rows stream through :func:`convert_rows`; ``complete`` turns true only
    once the file was read to its end (a ``limit`` stops earlier, and then ``rows_read`` is partial).
    """

    path: str
    dataset: str
    split: str
    #: "dataset" (a file in the dataset's folder), "merged" (a root file split by data_source) or "hub".
    layout: str
    schema: str | None = None
    rows_read: int = 0
    rows_kept: int = 0
    complete: bool = False
    #: reason -> rows, e.g. ``{"data_source=triviaqa": 11313}`` for another dataset's rows of a merged file.
    rows_dropped: Counter = field(default_factory=Counter)
    #: data_source value -> rows read (empty when the file has no data_source).
    data_sources: Counter = field(default_factory=Counter)
    #: where each kept row's id / question / answers came from (field name -> rows).
    ids_from: Counter = field(default_factory=Counter)
    questions_from: Counter = field(default_factory=Counter)
    answers_from: Counter = field(default_factory=Counter)
    #: rows where one field held the converter's rewrite of another's question; the unrewritten one kept.
    questions_rewritten: int = 0
    #: rows whose question ends in "?" in every field that has it: the "?" may be a converter's.
    questions_maybe_rewritten: int = 0
    #: rows whose prompt holds a question unlike the kept field's (the field is kept).
    questions_unlike_prompt: int = 0
    notes: list = field(default_factory=list)

    def warnings(self) -> list[str]:
        """Plain-language flags for a reader of the manifest (also derived again by :meth:`as_dict`)."""
        out = list(self.notes)
        if self.questions_rewritten:
            out.append(f"{self.questions_rewritten} questions were rewritten by a converter (stripped, '?' "
                       "appended) in one field and found unrewritten in another; the unrewritten form was kept")
        if self.questions_maybe_rewritten and not self.questions_rewritten and self.schema != FLASHRAG:
            where = ", ".join(sorted(self.questions_from))
            column = (" Search-R1's converter also writes the rewrite back into the FlashRAG 'question' column."
                      if "question" in self.questions_from else "")
            out.append(f"{self.questions_maybe_rewritten} questions (from {where}) end in '?' in every field of "
                       "their row; Search-R1's converter strips each question and appends '?' when missing "
                       f"before building the prompt, so these may not be the benchmark's original wording.{column}"
                       " FlashRAG's own files give the original questions.")
        if self.questions_unlike_prompt:
            out.append(f"{self.questions_unlike_prompt} rows hold a different question in their prompt than in "
                       f"{', '.join(sorted(self.questions_from))}; the latter was kept")
        return out

    def as_dict(self) -> dict:
        """A JSON-ready dict (counters as sorted plain dicts, plus ``warnings``)."""
        return {
            "path": self.path, "dataset": self.dataset, "split": self.split, "layout": self.layout,
            "schema": self.schema, "rows_read": self.rows_read, "rows_kept": self.rows_kept,
            "complete": self.complete,
            "rows_dropped": dict(sorted(self.rows_dropped.items())),
            "data_sources": dict(sorted(self.data_sources.items())),
            "ids_from": dict(sorted(self.ids_from.items())),
            "questions_from": dict(sorted(self.questions_from.items())),
            "answers_from": dict(sorted(self.answers_from.items())),
            "questions_rewritten": self.questions_rewritten,
            "questions_maybe_rewritten": self.questions_maybe_rewritten,
            "questions_unlike_prompt": self.questions_unlike_prompt,
            "warnings": self.warnings(),
        }


# --- the row readers ---------------------------------------------------------------------------

def question_from_prompt(prompt: Any) -> tuple[str | None, str]:
    """The question inside a Search-R1 prompt, as ``(question, "")``, or ``(None, why)`` when it
    cannot be read unambiguously.

    The prompt is a chat list (or a plain string); its single ``user`` message must hold exactly one
    ``Question:`` marker (at the start or after whitespace) whose line is the last non-blank line of
    the message, which is how Search-R1's and verl's templates end.
    """
    if isinstance(prompt, str):
        content = prompt
    elif isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if len(users) != 1:
            return None, f"the prompt has {len(users)} user messages, expected one"
        content = users[0].get("content")
        if not isinstance(content, str):
            return None, "the prompt's user message has no text content"
    else:
        return None, f"the prompt is a {type(prompt).__name__}, expected a chat list"
    marks = list(_QUESTION_MARK_RE.finditer(content))
    if len(marks) != 1:
        return None, f"'Question:' occurs {len(marks)} times in the prompt's user message, expected once"
    line, _, after = content[marks[0].end():].partition("\n")
    if after.strip():
        return None, "text follows the 'Question:' line of the prompt, so where the question ends is unclear"
    if not line.strip():
        return None, "nothing follows 'Question:' in the prompt"
    return line.strip(), ""


def _rewrite_relation(a: str, b: str) -> str:
    """How two stripped question texts relate: "same", "b" (b is a's rewrite, '?' appended),
    "a" (a is b's rewrite) or "different"."""
    if a == b:
        return "same"
    if b == a + "?" and not a.endswith("?"):
        return "b"
    if a == b + "?" and not b.endswith("?"):
        return "a"
    return "different"


def _object_field(raw: dict, name: str, path: str, line: int) -> dict:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(path, f"expected an object, got {type(value).__name__}", line=line, field=name)
    return value


def _question(raw: dict, extra: dict, path: str, line: int, stats: SourceStats) -> str:
    found = []
    for name, value in (("question", raw.get("question")), ("extra_info.question", extra.get("question"))):
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(path, f"expected str, got {type(value).__name__}", line=line, field=name)
        if not value.strip():
            raise InputError(path, "is blank", line=line, field=name)
        found.append((name, value.strip()))
    prompt = raw.get("prompt")
    in_prompt, why = question_from_prompt(prompt) if prompt is not None else (None, "there is no prompt")
    if not found:
        if in_prompt is None:
            raise InputError(path, "no question: neither a 'question' column nor extra_info.question, and the "
                             f"prompt does not show it unambiguously ({why})", line=line, field="prompt")
        found.append(("prompt", in_prompt))
    elif in_prompt is not None:
        found.append(("prompt", in_prompt))
    (kept_field, kept), rewritten = found[0], False
    for name, text in found[1:]:
        relation = _rewrite_relation(kept, text)
        if relation == "b":
            rewritten = True
        elif relation == "a":
            kept_field, kept, rewritten = name, text, True
        elif relation == "different":
            if name == "prompt":
                stats.questions_unlike_prompt += 1
                continue
            raise InputError(path, f"{text!r} differs from {kept_field} {kept!r} by more than a converter's rewrite "
                             "(stripped, '?' appended): which one is the question is ambiguous", line=line, field=name)
    stats.questions_from[kept_field] += 1
    if rewritten:
        stats.questions_rewritten += 1
    elif kept.endswith("?"):
        stats.questions_maybe_rewritten += 1
    return kept


def _answer_list(value: list | tuple, name: str, path: str, line: int) -> list[str]:
    if not value:
        raise InputError(path, "is empty", line=line, field=name)
    out = []
    for i, answer in enumerate(value):
        if not isinstance(answer, str):
            raise InputError(path, f"item {i}: expected str, got {type(answer).__name__}", line=line, field=name)
        if not answer.strip():
            raise InputError(path, f"item {i}: is blank", line=line, field=name)
        out.append(answer.strip())
    return out


def _answers(raw: dict, extra: dict, reward: dict, path: str, line: int, stats: SourceStats) -> list[str]:
    lists: list[tuple[str, list[str]]] = []
    strings: list[tuple[str, str]] = []

    def take(name: str, value: Any, string_is_list: bool = False) -> None:
        if value is None:
            return
        if isinstance(value, str):
            if not value.strip():
                raise InputError(path, "is blank", line=line, field=name)
            if string_is_list:
                lists.append((name + " (one string)", [value.strip()]))
            else:
                strings.append((name, value.strip()))
        elif isinstance(value, (list, tuple)):
            lists.append((name, _answer_list(value, name, path, line)))
        else:
            raise InputError(path, f"expected a list of strings or a string, got {type(value).__name__}",
                             line=line, field=name)

    take("golden_answers", raw.get("golden_answers"), string_is_list=True)   # FlashRAG: a string is one answer
    truth = reward.get("ground_truth")
    if isinstance(truth, dict):
        if truth.get("target") is None:
            raise InputError(path, f"expected a list, a string or {{'target': ...}}, got an object with keys "
                             f"{sorted(truth)}", line=line, field="reward_model.ground_truth")
        take("reward_model.ground_truth.target", truth["target"])
    else:
        take("reward_model.ground_truth", truth)
    for key in EXTRA_ANSWER_KEYS:
        take(f"extra_info.{key}", extra.get(key))

    if lists:
        chosen_field, chosen = lists[0]
        for name, items in lists[1:]:
            if set(items) != set(chosen):
                raise InputError(path, f"{items!r} disagrees with {chosen_field.split(' ')[0]} {chosen!r}",
                                 line=line, field=name)
        for name, text in strings:
            if text not in chosen and not all(answer in text for answer in chosen):
                raise InputError(path, f"{text!r} disagrees with {chosen_field.split(' ')[0]} {chosen!r}",
                                 line=line, field=name)
        stats.answers_from[chosen_field] += 1
        return chosen
    if strings:
        chosen_field, text = strings[0]
        for name, other in strings[1:]:
            if other != text:
                raise InputError(path, f"{other!r} disagrees with {chosen_field} {text!r}", line=line, field=name)
        separators = [s for s in ANSWER_SEPARATORS if s in text]
        if separators:
            raise InputError(path, f"one string {text!r} holding {separators[0]!r}, and no list of answers beside it "
                             "(golden_answers, reward_model.ground_truth.target, extra_info.answer): one answer "
                             "or several joined cannot be told apart, so it is not split", line=line, field=chosen_field)
        stats.answers_from[chosen_field + " (one string)"] += 1
        return [text]
    raise InputError(path, "missing: no answers in golden_answers, reward_model.ground_truth or extra_info",
                     line=line, field="reward_model.ground_truth")


def _record_id(raw: dict, extra: dict, path: str, line: int, split: str, position: int, stats: SourceStats) -> str:
    if raw.get("id") is not None:
        stats.ids_from["id"] += 1
        return require_id(raw, path, line)
    index = extra.get("index")
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, (int, str)) or not str(index).strip():
            raise InputError(path, f"expected an int or a non-blank str, got {index!r}", line=line,
                             field="extra_info.index")
        stats.ids_from["extra_info.index"] += 1
        parts = (raw.get("data_source"), extra.get("split") or split, index)
        return "_".join(str(p).strip() for p in parts if p is not None and str(p).strip())
    stats.ids_from["row"] += 1
    return f"row_{position}"


def search_r1_record(raw: dict, path: str, line: int, split: str, position: int, stats: SourceStats) -> dict:
    """One Search-R1/verl row as a FlashRAG record (see the module doc for the rules); located
    :class:`InputError` naming the verl field (``reward_model.ground_truth``, ``prompt``...) otherwise.
    ``position`` is the row's 0-based position in the split's files (for ``row_<n>`` ids)."""
    extra = _object_field(raw, "extra_info", path, line)
    reward = _object_field(raw, "reward_model", path, line)
    return {
        "id": _record_id(raw, extra, path, line, split, position, stats),
        "question": _question(raw, extra, path, line, stats),
        "golden_answers": _answers(raw, extra, reward, path, line, stats),
        "metadata": raw.get("metadata"),
    }


def flashrag_record(raw: dict, stats: SourceStats) -> dict:
    """A FlashRAG row as is (validated later); only counted in ``stats``."""
    stats.ids_from["id"] += 1
    stats.questions_from["question"] += 1
    stats.answers_from["golden_answers (one string)" if isinstance(raw.get("golden_answers"), str)
                       else "golden_answers"] += 1
    return raw


def convert_rows(rows: Iterable[tuple[int, Any]], path: str, columns: Iterable[str], stats: SourceStats, *,
                 merged: bool, known_datasets: Iterable[str] = (), row_offset: int = 0
                 ) -> Iterator[tuple[str, int, dict]]:
    """Stream ``(path, line, record)`` for the rows of one file that belong to ``stats.dataset``.

    ``columns`` decide the schema. With ``merged`` the file holds several datasets: every row needs a
    ``data_source`` and those naming another dataset are dropped (counted in ``stats.rows_dropped``).
    Otherwise the file is the dataset's own: a ``data_source``, when present, must be the same on
    every row, and one naming another of ``known_datasets`` is refused as a misplaced file (any
    other name is kept with a note). ``row_offset`` is the number of rows in the split's earlier files.
    """
    columns = list(columns)
    schema = detect_schema(columns, path) if columns else None
    stats.schema = schema
    known = frozenset(known_datasets)
    first_source: str | None = None
    for position, (line, raw) in enumerate(rows, start=row_offset):
        stats.rows_read += 1
        if not isinstance(raw, dict):
            raise InputError(path, f"expected an object, got {type(raw).__name__}", line=line)
        source = raw.get("data_source")
        if source is not None and (not isinstance(source, str) or not source.strip()):
            raise InputError(path, f"expected a non-blank str, got {source!r}", line=line, field="data_source")
        if merged:
            if source is None:
                raise InputError(path, "missing: a merged file's rows are assigned to datasets by it",
                                 line=line, field="data_source")
            stats.data_sources[source] += 1
            if dataset_of(source) != stats.dataset:
                stats.rows_dropped[f"data_source={source}"] += 1
                continue
        elif source is not None:
            stats.data_sources[source] += 1
            if first_source is None:
                first_source = source
                name = dataset_of(source)
                if name != stats.dataset:
                    if name in known:
                        raise InputError(path, f"data_source {source!r} names dataset {name!r}, but the file is "
                                         f"in the folder of dataset {stats.dataset!r}", line=line, field="data_source")
                    stats.notes.append(f"data_source {source!r} differs from the folder's dataset name "
                                       f"{stats.dataset!r}; its rows are read as {stats.dataset!r}")
            elif dataset_of(source) != dataset_of(first_source):
                raise InputError(path, f"{source!r} after {first_source!r}: this file holds several datasets; put it "
                                 "at the root of data.local_dir as <split>.parquet (or .jsonl) to have its rows "
                                 "assigned to datasets by data_source", line=line, field="data_source")
        if schema == FLASHRAG:
            record = flashrag_record(raw, stats)
        else:
            record = search_r1_record(raw, path, line, stats.split, position, stats)
        stats.rows_kept += 1
        yield path, line, record
    stats.complete = True


__all__ = [
    "FLASHRAG", "SEARCH_R1", "SEARCH_R1_WITH_FLASHRAG", "SourceStats", "convert_rows", "dataset_of",
    "detect_schema", "flashrag_record", "question_from_prompt", "search_r1_record",
]
