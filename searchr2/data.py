"""QA sets in the FlashRAG schema: which split is evaluated on, the one loader every stage reads
them with, and the paper profile's preparation of the real benchmarks and the wiki-18 corpus.

Every stage reads its questions through :func:`load_eval_set` (the evaluation split of a set:
``test``, else ``dev``, see :func:`first_eval_split`) or :func:`load_train_records` (the train
splits), from ``<qa_dir>/<dataset>/<split>.jsonl`` as the world stage wrote them.

The embedded default builds its questions and passages with :mod:`searchr2.world`. The paper
profile instead reads the published benchmarks, and this module is the single place that turns
them into the pipeline's shared formats:

* QA records, FlashRAG schema: ``{"id": str, "question": str, "golden_answers": [str, ...],
  "metadata": {...}}``, written as ``<qa_dir>/<dataset>/<split>.jsonl``.
* Corpus passages, wiki-18 DPR schema: ``{"id": str, "contents": "\\"Title\\"\\ntext"}``.

Two sources of QA sets are supported (``DataConfig.source``):

``hub``
    ``datasets.load_dataset(hub_dataset, <dataset>, split=<split>)`` on the Hugging Face dataset
    ``RUC-NLPIR/FlashRAG_datasets`` (one config per benchmark). The available splits are asked
    of the hub first, so the evaluation split is ``test`` when the config has one and ``dev``
    otherwise. Offline machines cannot reach the hub (unless the dataset is already in the
    ``datasets`` cache); the error then says which config failed and how to switch to ``local``.

``local``
    A directory with the same layout as the hub repository, so a plain download of
    ``RUC-NLPIR/FlashRAG_datasets`` works as is, or holding Search-R1's merged files (below). For
    every ``<dataset>`` and ``<split>`` exactly one of these forms must be present (several at once,
    a merged root file included, is refused as ambiguous)::

        <local_dir>/<dataset>/<split>.jsonl          FlashRAG's own files
        <local_dir>/<dataset>/<split>.jsonl.gz       the same, compressed
        <local_dir>/<dataset>/<split>.parquet        one parquet file
        <local_dir>/<dataset>/<split>-*.parquet      parquet shards, read in name order
        <local_dir>/<dataset>/<split>/*.parquet      the hub's parquet conversion layout
        <local_dir>/<split>.parquet                  a merged file: rows go to the dataset their
        <local_dir>/<split>-*.parquet                  ``data_source`` names (a ``searchR1_`` tag
        <local_dir>/<split>.jsonl[.gz]                 removed); one form of these at most

    So a download of Search-R1's data (``train.parquet`` with NQ and HotpotQA, ``test.parquet`` with
    the seven benchmarks; Jin et al., arXiv 2503.09516) is pointed at as is, and its per-benchmark
    outputs (``scripts/data_process/nq_search.py``) go in a dataset's folder or at the root alike.
    A root file counts for a dataset only if some row names it, so datasets missing from it (a
    dev-only set in its own folder, say) are still found in their folders. Note that Search-R1's
    merged ``test.parquet`` holds each benchmark's FlashRAG test split where public and its dev
    split otherwise, all under the name ``test``; read from it, every benchmark's evaluation split
    is ``test``.

    Each file's schema, FlashRAG or Search-R1/verl (``data_source``, ``prompt``, ``reward_model``,
    ``extra_info``...), is detected from its columns; :mod:`searchr2.qa_formats` describes how
    questions, answers and ids are found in the latter and what ambiguities fail. Errors in
    parquet files use the 1-based row index within the file as the "line".

:func:`load_qa_split` reports per source file what it detected, read, kept, dropped and why
(:class:`~searchr2.qa_formats.SourceStats`), and :func:`prepare_real_data` puts these in its manifest.

The corpus always comes from a local wiki-18 jsonl or jsonl.gz (21M passages, about 14 GB): it
is streamed one line at a time through :func:`searchr2.corpus.iter_source_passages`, which
validates every line and rejects repeated ids, and is never held in memory.
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from tqdm import tqdm

from searchr2.corpus import byte_progress, iter_source_passages, passage_line
from searchr2.io import InputError, atomic_dir, atomic_file, read_jsonl, require_field, require_id, sha256_file
from searchr2.params import check_types
from searchr2.paths import RAW_DIR
from searchr2.qa_formats import SourceStats, convert_rows, dataset_of

#: The seven evaluation benchmarks of the paper, in the order of its tables.
PAPER_TEST_SETS = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
#: The paper trains on NQ train merged with HotpotQA train.
PAPER_TRAIN_SETS = ("nq", "hotpotqa")
#: Evaluation uses the first of these splits that a dataset has (FlashRAG's convention).
EVAL_SPLIT_ORDER = ("test", "dev")
#: The split trained on.
TRAIN_SPLIT = "train"


def first_eval_split(has_split: Callable[[str], bool]) -> str | None:
    """The split a dataset is evaluated on: the first of :data:`EVAL_SPLIT_ORDER` (``test``, then
    ``dev``) for which ``has_split(split)`` is true, asked in that order; None when it has neither.

    FlashRAG keeps the official test sets where they are public and the dev sets otherwise, which
    is what the paper (arXiv 2602.03647) reports on. This is the one place the rule is written.
    """
    return next((split for split in EVAL_SPLIT_ORDER if has_split(split)), None)


# The paper benchmarks whose test split is public (and in FlashRAG); the others have only dev.
_PUBLIC_TEST_SETS = frozenset({"nq", "triviaqa", "popqa", "bamboogle"})
#: The split each paper benchmark is evaluated on, in table order (the embedded world generates these).
PAPER_EVAL_SPLITS = {dataset: first_eval_split(lambda split, d=dataset: split == "dev" or d in _PUBLIC_TEST_SETS)
                     for dataset in PAPER_TEST_SETS}

_SOURCES = ("world", "hub", "local")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class DataConfig:
    """Where the paper profile's QA sets and corpus come from, and how much of them to keep (the ``data``
    params section; the embedded world reads only ``source``)."""

    # QA source: "world" (synthetic, produced by searchr2.world, not by this module), "hub"
    # (Hugging Face datasets) or "local" (a directory of FlashRAG-style files, see module doc).
    source: str = "world"
    # Hugging Face dataset id holding one config per benchmark (used when source=hub).
    hub_dataset: str = "RUC-NLPIR/FlashRAG_datasets"
    # Git revision (branch, tag or commit) of hub_dataset to pin for reproducibility; None = main.
    hub_revision: str | None = None
    # Directory with <dataset>/<split>.jsonl (or .jsonl.gz / .parquet forms, or merged <split>.parquet
    # files split by data_source); required for local.
    local_dir: str | None = None
    # wiki-18 corpus file, jsonl or jsonl.gz with {"id", "contents"} lines; required for hub/local.
    corpus_path: str | None = None
    # Benchmarks to evaluate on; each uses its test split, else its dev split.
    test_sets: tuple = PAPER_TEST_SETS
    # Benchmarks whose train split is prepared for training (the paper merges NQ and HotpotQA).
    train_sets: tuple = PAPER_TRAIN_SETS
    # Keep only the first N records of each eval set (deterministic, file order); None = all.
    max_test: int | None = None
    # Keep only the first N records of each train set (deterministic, file order); None = all.
    max_train: int | None = None

    def __post_init__(self) -> None:
        check_types(self, "data.")
        # YAML gives lists; store tuples so the config stays hashable and comparisons are stable.
        for name in ("test_sets", "train_sets"):
            value = getattr(self, name)
            for item in value:
                if not isinstance(item, str) or not _NAME_RE.match(item):
                    raise ValueError(f"data.{name}: {item!r} is not a valid dataset name "
                                     "(letters, digits, '_', '-', '.'; no path separators)")
            if len(set(value)) != len(value):
                raise ValueError(f"data.{name}: duplicate dataset names in {list(value)}")
            object.__setattr__(self, name, tuple(value))
        if self.source not in _SOURCES:
            raise ValueError(f"data.source: expected one of {', '.join(_SOURCES)}, got {self.source!r}")
        for name in ("max_test", "max_train"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"data.{name}: expected a positive integer or null, got {value!r}")


class HubError(RuntimeError):
    """The Hugging Face hub could not provide a dataset config (offline, missing, renamed)."""


# ---------------------------------------------------------------------------------------------
# QA records
# ---------------------------------------------------------------------------------------------

def validate_qa_record(record: Any, path: str | os.PathLike, line: int | None) -> dict:
    """Check one FlashRAG QA record and return it normalised.

    Normal form: ``id`` a string (ints converted), ``question`` stripped and non-empty,
    ``golden_answers`` a non-empty list of stripped non-empty strings (one string is taken as a
    one-answer list), ``metadata`` a dict (``{}`` when absent or null). Other keys are dropped, so
    every record downstream has exactly these four. Anything else raises :class:`InputError`
    naming ``path``, ``line`` and the field.
    """
    if not isinstance(record, dict):
        raise InputError(path, f"expected a JSON object, got {type(record).__name__}", line=line)
    rid = require_id(record, path, line)
    question = require_field(record, "question", str, path, line).strip()
    if not question:
        raise InputError(path, "is blank", line=line, field="question")
    answers = require_field(record, "golden_answers", (list, tuple, str), path, line)
    if isinstance(answers, str):
        if not answers.strip():
            raise InputError(path, "is blank", line=line, field="golden_answers")
        answers = [answers]
    golden = []
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise InputError(path, f"item {i}: expected str, got {type(answer).__name__}",
                             line=line, field="golden_answers")
        if not answer.strip():
            raise InputError(path, f"item {i}: is blank", line=line, field="golden_answers")
        golden.append(answer.strip())
    metadata = record.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise InputError(path, f"expected dict, got {type(metadata).__name__}", line=line, field="metadata")
    return {"id": rid, "question": question, "golden_answers": golden, "metadata": metadata}


def _validated(rows: Iterable[tuple[str, int, Any]], limit: int | None) -> Iterator[dict]:
    """Validate ``(path, line, record)`` rows, reject duplicate ids, stop after ``limit``."""
    seen: dict[str, tuple[str, int]] = {}
    for path, line, raw in itertools.islice(rows, limit):
        record = validate_qa_record(raw, path, line)
        first = seen.get(record["id"])
        if first is not None:
            raise InputError(path, f"duplicate id {record['id']!r} (first at {first[0]}:{first[1]})",
                             line=line, field="id")
        seen[record["id"]] = (str(path), line)
        yield record


# --- the pipeline's QA files (what the world stage wrote; read by every later stage) ---------------

def qa_path(qa_dir: str | os.PathLike, dataset: str, split: str) -> Path:
    """Where the world stage writes ``dataset``/``split``: ``<qa_dir>/<dataset>/<split>.jsonl``."""
    return Path(qa_dir) / dataset / f"{split}.jsonl"


def eval_split_path(qa_dir: str | os.PathLike, dataset: str) -> Path:
    """The evaluation split file of a dataset under ``qa_dir``: ``test.jsonl``, else ``dev.jsonl``."""
    split = first_eval_split(lambda s: qa_path(qa_dir, dataset, s).exists())
    if split is None:
        names = " or ".join(f"{s}.jsonl" for s in EVAL_SPLIT_ORDER)
        raise InputError(Path(qa_dir) / dataset, f"no {names}; run the `world` stage first")
    return qa_path(qa_dir, dataset, split)


def read_qa_file(path: str | os.PathLike, limit: int | None = None) -> Iterator[dict]:
    """Stream the validated records of one QA jsonl (:func:`validate_qa_record`; ids unique in the
    file), only the first ``limit`` of them when it is given."""
    return _validated(((path, line, record) for line, record in read_jsonl(path)), limit)


def load_eval_set(qa_dir: str | os.PathLike, dataset: str, max_questions: int | None) -> list[dict]:
    """The first ``max_questions`` records (all when None) of a dataset's evaluation split."""
    path = eval_split_path(qa_dir, dataset)
    records = list(read_qa_file(path, max_questions))
    if not records:
        raise InputError(path, "the eval set is empty")
    return records


def load_train_records(qa_dir: str | os.PathLike, train_sets: Iterable[str]) -> list[dict]:
    """The train splits of ``train_sets``, concatenated in that order (the paper trains on NQ + HotpotQA)."""
    records = []
    for name in train_sets:
        path = qa_path(qa_dir, name, TRAIN_SPLIT)
        if not path.exists():
            raise InputError(path, "no train split; run the `world` stage first (train sets: data.train_sets)")
        records += read_qa_file(path)
    if not records:
        raise InputError(qa_dir, f"the train sets {list(train_sets)} are empty")
    return records


# --- local files ------------------------------------------------------------------------------

def _local_root(cfg: DataConfig) -> Path:
    if not cfg.local_dir:
        raise ValueError("data.local_dir is required when data.source=local: a directory holding "
                         "<dataset>/<split>.jsonl files in the FlashRAG layout")
    root = Path(cfg.local_dir)
    if not root.is_dir():
        raise InputError(root, "data.local_dir: directory not found")
    return root


class _LocalSplit(NamedTuple):
    """The file(s) of one dataset/split under ``data.local_dir``; ``merged``: root files holding
    several datasets, whose rows are assigned by ``data_source``."""

    files: list[Path]
    merged: bool


def _local_candidates(root: Path, dataset: str, split: str) -> list[str]:
    """The accepted spellings of one split's file(s), for error messages."""
    d = root / dataset
    return [str(d / f"{split}.jsonl"), str(d / f"{split}.jsonl.gz"), str(d / f"{split}.parquet"),
            str(d / f"{split}-*.parquet"), str(d / split / "*.parquet"),
            f"{root / split}.parquet, {root / split}-*.parquet, {root / split}.jsonl or {root / split}.jsonl.gz "
            f"with rows whose data_source is {dataset!r}"]


def _dataset_forms(d: Path, split: str) -> list[list[Path]]:
    """The forms of ``split`` inside a dataset's folder ``d`` (empty lists for absent ones)."""
    return [
        [d / f"{split}.jsonl"] if (d / f"{split}.jsonl").is_file() else [],
        [d / f"{split}.jsonl.gz"] if (d / f"{split}.jsonl.gz").is_file() else [],
        [d / f"{split}.parquet"] if (d / f"{split}.parquet").is_file() else [],
        sorted(p for p in d.glob(f"{split}-*.parquet") if p.is_file()) if d.is_dir() else [],
        sorted(p for p in (d / split).glob("*.parquet") if p.is_file()) if (d / split).is_dir() else [],
    ]


def _root_forms(root: Path, split: str) -> list[list[Path]]:
    """The merged forms of ``split`` at the root of ``data.local_dir`` (Search-R1's train/test files)."""
    return [
        [root / f"{split}.jsonl"] if (root / f"{split}.jsonl").is_file() else [],
        [root / f"{split}.jsonl.gz"] if (root / f"{split}.jsonl.gz").is_file() else [],
        [root / f"{split}.parquet"] if (root / f"{split}.parquet").is_file() else [],
        sorted(p for p in root.glob(f"{split}-*.parquet") if p.is_file()),
    ]


def _describe(files: list[Path]) -> str:
    return str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"


def _local_files(root: Path, dataset: str, split: str) -> _LocalSplit | None:
    """The file(s) holding ``dataset``/``split`` under ``root``, or None if there are none.

    A root file counts for ``dataset`` only when some row's ``data_source`` names it. Several
    forms for the same dataset/split (including a dataset file and a merged root file) are refused.
    """
    d = root / dataset
    present = [_LocalSplit(files, False) for files in _dataset_forms(d, split) if files]
    merged = [files for files in _root_forms(root, split) if files]
    if len(merged) > 1:
        raise InputError(root, f"split {split!r} is present at the root in several forms "
                         f"({', '.join(_describe(f) for f in merged)}); keep only one")
    if merged and dataset in _merged_datasets(merged[0]):
        present.append(_LocalSplit(merged[0], True))
    if not present:
        return None
    if len(present) > 1:
        listed = ", ".join(_describe(p.files) + (f" (rows with data_source {dataset!r})" if p.merged else "")
                           for p in present)
        raise InputError(d, f"split {split!r} is present in several forms ({listed}); keep only one")
    return present[0]


_MERGED_CACHE: dict[tuple[str, int, int], frozenset] = {}


def _merged_datasets(files: list[Path]) -> frozenset:
    """The datasets (:func:`~searchr2.qa_formats.dataset_of` each ``data_source``) that root files hold;
    remembered per file size and mtime, since every dataset asks again."""
    names: set[str] = set()
    for path in files:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _MERGED_CACHE:
            _MERGED_CACHE[key] = _scan_data_sources(path)
        names |= _MERGED_CACHE[key]
    return frozenset(names)


def _scan_data_sources(path: Path) -> frozenset:
    """The datasets named by a merged file's ``data_source`` values (only that column of a parquet is read)."""
    why = ("a file at the root of data.local_dir holds several datasets told apart by data_source (as "
           "Search-R1's merged train/test files do)")
    if path.name.endswith(".parquet"):
        pf = _open_parquet(path)
        if "data_source" not in pf.schema_arrow.names:
            raise InputError(path, f"missing: {why}; this file has no such column (put a single dataset's "
                             "file at <local_dir>/<dataset>/<split>.parquet instead)", field="data_source")
        values = enumerate(pf.read(columns=["data_source"]).column(0).to_pylist(), start=1)
    else:
        values = ((line, record.get("data_source")) for line, record in read_jsonl(path))
    names = set()
    for line, value in values:
        if not isinstance(value, str) or not value.strip():
            raise InputError(path, f"expected a non-blank str, got {value!r}: {why}", line=line, field="data_source")
        names.add(dataset_of(value))
    return frozenset(names)


def _open_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise InputError(path, f"not a readable parquet file ({e})") from None


def _file_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, Any]]]:
    """A file's column names and its ``(line, record)`` rows, streamed.

    Parquet rows come back as plain Python values (lists stay lists, structs dicts) with the 1-based
    row index as the line; a jsonl file's columns are the keys of its first record.
    """
    if path.name.endswith(".parquet"):
        pf = _open_parquet(path)

        def rows() -> Iterator[tuple[int, Any]]:
            row = 0
            for batch in pf.iter_batches(batch_size=4096):
                for record in batch.to_pylist():
                    row += 1
                    yield row, record

        return list(pf.schema_arrow.names), rows()
    lines = read_jsonl(path)
    first = next(lines, None)
    if first is None:
        return [], iter(())
    return list(first[1]), itertools.chain([first], lines)


def _read_local(found: _LocalSplit, dataset: str, split: str, known: Iterable[str],
                stats: list) -> Iterator[tuple[str, int, Any]]:
    """The rows of ``dataset``/``split`` from its local file(s), as FlashRAG records to validate;
    one :class:`~searchr2.qa_formats.SourceStats` per file is appended to ``stats`` as it is opened."""
    offset = 0
    for path in found.files:
        columns, rows = _file_rows(path)
        entry = SourceStats(str(path), dataset, split, "merged" if found.merged else "dataset")
        stats.append(entry)
        yield from convert_rows(rows, str(path), columns, entry, merged=found.merged, known_datasets=known,
                                row_offset=offset)
        offset += entry.rows_read


# --- hub ----------------------------------------------------------------------------------------

def _hub_failure(cfg: DataConfig, dataset: str, what: str, error: BaseException) -> HubError:
    return HubError(
        f"could not {what} of Hugging Face dataset {cfg.hub_dataset!r}, config {dataset!r}"
        f" ({type(error).__name__}: {error}). If this machine is offline, download the FlashRAG"
        f" files elsewhere and set data.source=local with data.local_dir pointing at a directory"
        f" holding {dataset}/<split>.jsonl")


def _hub_splits(cfg: DataConfig, dataset: str) -> list[str]:
    import datasets

    try:
        return list(datasets.get_dataset_split_names(cfg.hub_dataset, dataset, revision=cfg.hub_revision))
    except Exception as e:  # offline, unknown config, network: all reported the same way
        raise _hub_failure(cfg, dataset, "list the splits", e) from e


def _hub_label(cfg: DataConfig, dataset: str, split: str) -> str:
    """The "path" used in error messages for hub rows."""
    rev = f"@{cfg.hub_revision}" if cfg.hub_revision else ""
    return f"hf://datasets/{cfg.hub_dataset}{rev}/{dataset}[{split}]"


def _read_hub(cfg: DataConfig, dataset: str, split: str, stats: list) -> Iterator[tuple[str, int, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.hub_dataset, dataset, split=split, revision=cfg.hub_revision)
    except Exception as e:
        raise _hub_failure(cfg, dataset, f"load split {split!r}", e) from e
    label = _hub_label(cfg, dataset, split)
    entry = SourceStats(label, dataset, split, "hub")
    stats.append(entry)
    yield from convert_rows(enumerate(ds, start=1), label, ds.column_names, entry, merged=False)


# --- public QA API ------------------------------------------------------------------------------

def _check_source(cfg: DataConfig) -> None:
    if cfg.source == "world":
        raise ValueError("data.source=world: the synthetic world's QA sets and corpus are generated "
                         "by searchr2.world; searchr2.data only loads real data (source hub or local)")
    if cfg.source not in ("hub", "local"):
        raise ValueError(f"data.source: expected hub or local here, got {cfg.source!r}")


def eval_split(cfg: DataConfig, dataset: str) -> str:
    """Which split of ``dataset`` the source offers for evaluation (:func:`first_eval_split`).

    FlashRAG keeps the official test sets where they are public (NQ, TriviaQA, PopQA, Bamboogle)
    and the dev sets otherwise (HotpotQA, 2Wiki, Musique), which is what the paper reports.
    """
    _check_source(cfg)
    if cfg.source == "hub":
        available = _hub_splits(cfg, dataset)
        split = first_eval_split(lambda s: s in available)
        if split is not None:
            return split
        raise HubError(f"Hugging Face dataset {cfg.hub_dataset!r}, config {dataset!r} has no "
                       f"{' or '.join(EVAL_SPLIT_ORDER)} split (it has: {', '.join(available) or 'none'})")
    root = _local_root(cfg)
    split = first_eval_split(lambda s: _local_files(root, dataset, s) is not None)
    if split is not None:
        return split
    expected = [c for split in EVAL_SPLIT_ORDER for c in _local_candidates(root, dataset, split)]
    raise InputError(root / dataset, f"no evaluation split for dataset {dataset!r}; expected one of: "
                     + ", ".join(expected))


def load_qa_split(cfg: DataConfig, dataset: str, split: str, limit: int | None = None,
                  stats: list | None = None) -> Iterator[dict]:
    """Yield the validated, normalised records of ``dataset``/``split``, in source order.

    ``limit`` keeps only the first N records (the caps ``max_test``/``max_train`` are applied by
    :func:`prepare_real_data` through it). Ids must be unique within the split (so per dataset,
    also when a merged file holds several). Each file's schema is detected from its columns
    (:mod:`searchr2.qa_formats`). When ``stats`` is a list, one
    :class:`~searchr2.qa_formats.SourceStats` per source file is appended to it as the file is
    opened and filled in as its rows stream (``.as_dict()`` for the manifest).
    """
    _check_source(cfg)
    if not _NAME_RE.match(dataset) or not _NAME_RE.match(split):
        raise ValueError(f"invalid dataset or split name: {dataset!r}/{split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    stats = [] if stats is None else stats
    if cfg.source == "hub":
        rows = _read_hub(cfg, dataset, split, stats)
    else:
        root = _local_root(cfg)
        found = _local_files(root, dataset, split)
        if found is None:
            raise InputError(root / dataset, f"split {split!r} of dataset {dataset!r} not found; expected "
                             "one of: " + ", ".join(_local_candidates(root, dataset, split)))
        known = set(cfg.test_sets) | set(cfg.train_sets) | set(PAPER_TEST_SETS)
        rows = _read_local(found, dataset, split, known, stats)
    return _validated(rows, limit)


# ---------------------------------------------------------------------------------------------
# The prepare stage
# ---------------------------------------------------------------------------------------------

def write_qa_file(records: Iterable[dict], out: Path, desc: str) -> int:
    """Write QA records as ``out`` (jsonl, one record a line, parent folders made); return how many.

    Not atomic by itself: both writers (the world stage and :func:`prepare_real_data`) write inside
    an :func:`~searchr2.io.atomic_dir`.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for record in tqdm(records, desc=desc, unit="q", leave=False):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def _open_corpus_writer(f: Any, corpus_out: Path) -> Any:
    """Wrap the atomic binary file: gzip (with a fixed mtime, for reproducible bytes) or plain."""
    if corpus_out.name.endswith(".gz"):
        return gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0)
    return f


def describe_source(path: str | os.PathLike) -> dict:
    """Provenance of one raw input file: its path as the params spell it, its size, its SHA-256, and
    whether it lies under :data:`~searchr2.paths.RAW_DIR`, the folder stage world lists as a DVC dependency
    (elsewhere DVC does not notice when it changes). Hashing reads the whole file once more (about a
    minute for wiki-18's 14 GB), a small price next to preparing it."""
    p = Path(path)
    return {"path": str(path), "bytes": p.stat().st_size, "sha256": sha256_file(p),
            "dvc_tracked": p.resolve().is_relative_to(RAW_DIR.resolve())}


def prepare_real_data(cfg: DataConfig, qa_dir: Path, corpus_out: Path) -> dict:
    """Materialise the paper profile's data in the pipeline's formats and return a manifest.

    Writes ``<qa_dir>/<dataset>/<split>.jsonl`` for every eval set (its test split, else dev,
    capped to ``max_test``) and every train set (its train split, capped to ``max_train``), then
    streams the corpus from ``cfg.corpus_path`` to ``corpus_out`` as normalised jsonl (gzip when
    ``corpus_out`` ends in ``.gz``). Both outputs are built in temporary siblings and put in
    place together only once everything succeeded, so a failure anywhere leaves neither a
    partial ``qa_dir`` nor a partial ``corpus_out`` (a previous complete one stays untouched).

    The manifest names what was written relative to ``qa_dir`` (``file``) and, for every source file,
    what was read (:func:`describe_source`: path as given, bytes, SHA-256, whether DVC watches it) and
    the reader's row counts (:class:`~searchr2.qa_formats.SourceStats`: read, kept, dropped and why).
    """
    _check_source(cfg)
    if not cfg.corpus_path:
        raise ValueError(f"data.corpus_path is required when data.source={cfg.source}: "
                         "a wiki-18 jsonl or jsonl.gz file")
    qa_dir, corpus_out = Path(qa_dir), Path(corpus_out)
    corpus_src = Path(cfg.corpus_path)
    if not corpus_src.is_file():
        raise InputError(corpus_src, "data.corpus_path: file not found")
    if corpus_out.resolve().is_relative_to(qa_dir.resolve()):
        raise ValueError(f"corpus_out {corpus_out} must not lie inside qa_dir {qa_dir}")
    if cfg.source == "local" and cfg.local_dir and qa_dir.resolve() == Path(cfg.local_dir).resolve():
        raise ValueError(f"qa_dir {qa_dir} must differ from data.local_dir (it would be replaced)")
    if corpus_out.resolve() == corpus_src.resolve():
        raise ValueError(f"corpus_out {corpus_out} must differ from data.corpus_path")

    manifest: dict[str, Any] = {
        "source": cfg.source,
        "origin": (f"hf://datasets/{cfg.hub_dataset}" + (f"@{cfg.hub_revision}" if cfg.hub_revision else "")
                   if cfg.source == "hub" else str(cfg.local_dir)),
        "eval": {}, "train": {}, "corpus": {},
    }
    described: dict[str, dict] = {}          # a merged file feeds several datasets: hash it once

    def describe(path: str) -> dict:
        if path not in described:
            described[path] = describe_source(path)
        return described[path]

    with atomic_dir(qa_dir) as tmp_qa:
        def write_split(role: str, dataset: str, split: str, limit: int | None) -> None:
            sources: list[SourceStats] = []
            records = load_qa_split(cfg, dataset, split, limit=limit, stats=sources)
            n = write_qa_file(records, tmp_qa / dataset / f"{split}.jsonl", f"{dataset}/{split}")
            entries = [entry.as_dict() for entry in sources]
            for entry in entries:
                if cfg.source == "local":
                    entry.update({k: v for k, v in describe(entry["path"]).items() if k != "path"})
            manifest[role][dataset] = {"split": split, "records": n, "file": f"{dataset}/{split}.jsonl",
                                       "sources": entries}

        for dataset in cfg.test_sets:
            write_split("eval", dataset, eval_split(cfg, dataset), cfg.max_test)
        for dataset in cfg.train_sets:
            write_split("train", dataset, TRAIN_SPLIT, cfg.max_train)

        # The corpus is written inside the QA directory's transaction: if it fails, the
        # half-built QA directory is discarded as well, and vice versa.
        passages = 0
        with atomic_file(corpus_out, "wb") as raw_out, byte_progress(corpus_src, f"corpus {corpus_src.name}") as bar:
            out = _open_corpus_writer(raw_out, corpus_out)
            try:
                for passage in iter_source_passages(corpus_src, bar):
                    out.write(passage_line(passage["id"], passage["contents"]).encode("utf-8"))
                    passages += 1
            finally:
                if out is not raw_out:
                    out.close()
            if passages == 0:
                raise InputError(corpus_src, "corpus has no passages")
        # every passage read is kept: a line that cannot be used stops the stage instead of being dropped
        manifest["corpus"] = {**describe(cfg.corpus_path), "rows_read": passages, "rows_kept": passages,
                              "rows_dropped": {}}
    untracked = sorted({p for p, d in described.items() if not d["dvc_tracked"]})
    if untracked:
        manifest["warnings"] = [f"{p} is outside {RAW_DIR}/: DVC does not watch it, so changing it will not make "
                                "stage world stale (data/raw/README.md)" for p in untracked]
        for warning in manifest["warnings"]:
            print(f"[world] warning: {warning}", file=sys.stderr)
    return manifest


__all__ = [
    "DataConfig", "HubError", "PAPER_TEST_SETS", "PAPER_TRAIN_SETS", "PAPER_EVAL_SPLITS", "EVAL_SPLIT_ORDER",
    "TRAIN_SPLIT", "first_eval_split", "eval_split", "load_qa_split", "prepare_real_data", "validate_qa_record",
    "qa_path", "eval_split_path", "read_qa_file", "load_eval_set", "load_train_records", "write_qa_file",
    "SourceStats", "describe_source",
]
