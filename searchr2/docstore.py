"""The passage corpus on disk: validated streaming, and random access by row without holding it in RAM.

The corpus is jsonl with one passage a line, ``{"id": "<str>", "contents": "\\"Title\\"\\ntext"}``,
the layout of the wiki-18 DPR dump that Search-R1 indexes. Two things every index needs live here:

* :func:`copy_corpus` streams the corpus once, checks every line (valid JSON, ``id`` a non-empty
  string, ``contents`` a non-empty string, no duplicate ids), and writes a normalised copy plus the
  byte offset of each of its lines. A bad line is an :class:`~searchr2.io.InputError` naming the
  file, the line and the field. The duplicate check keeps only a 64-bit hash per id in a numpy
  array (8 bytes a passage), so 21M passages need ~170 MB instead of several GB of Python strings.
* :class:`DocStore` reads passage ``i`` with one positioned read (``os.pread``), so a 21M-passage
  corpus costs only its offset array in memory and lookups are safe from several threads.

:func:`parse_contents` is the one place that splits ``contents`` into title and text.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from searchr2.io import InputError, read_jsonl, require_field

DOCS_FILE = "docs.jsonl"
OFFSETS_FILE = "offsets.npy"


def parse_contents(contents: str) -> tuple[str, str]:
    """Split a wiki-18 style ``contents`` into ``(title, text)``.

    The title is the first line with its surrounding double quotes removed; the text is the rest.
    A passage with no newline has an empty title and the whole string as its text.
    """
    title, sep, text = contents.partition("\n")
    if not sep:
        return "", contents.strip()
    title = title.strip()
    if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
        title = title[1:-1]
    return title.strip(), text.strip()


def iter_corpus(path: str | os.PathLike, progress: bool = False) -> Iterator[tuple[int, str, str]]:
    """Stream ``(line_number, id, contents)`` from a corpus jsonl(.gz), validating each line.

    Checks JSON syntax, the types of ``id`` and ``contents`` and that neither is empty. Duplicate
    ids are *not* checked here (that needs the whole file); :func:`copy_corpus` does it.
    """
    records = read_jsonl(path)
    if progress:
        records = tqdm(records, desc=f"reading {Path(path).name}", unit=" passages", mininterval=2.0)
    for lineno, record in records:
        pid = require_field(record, "id", str, path, lineno)
        contents = require_field(record, "contents", str, path, lineno)
        if not contents.strip():
            raise InputError(path, "is blank", line=lineno, field="contents")
        yield lineno, pid, contents


@dataclass(frozen=True)
class CorpusCopy:
    """What :func:`copy_corpus` wrote: the number of passages and the two file paths."""

    n_docs: int
    docs_path: Path
    offsets_path: Path | None


def _raise_duplicate(path: str | os.PathLike, hashes: np.ndarray) -> None:
    """Locate the first repeated id (hashes say some id repeats) and raise a located error."""
    ordered = np.sort(hashes)
    suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    first_line: dict[str, int] = {}
    for lineno, pid, _ in iter_corpus(path):
        if hash(pid) in suspects:
            if pid in first_line:
                raise InputError(path, f"duplicate id {pid!r} (first used at line {first_line[pid]})",
                                 line=lineno, field="id")
            first_line[pid] = lineno
    # Only a 64-bit hash collision between different ids: nothing to report.


def copy_corpus(corpus_path: str | os.PathLike, out_dir: str | os.PathLike, with_offsets: bool = True,
                docs_name: str = DOCS_FILE) -> CorpusCopy:
    """Validate the corpus while copying it to ``out_dir/docs_name`` as normalised jsonl.

    Each output line is ``{"id": ..., "contents": ...}`` (other fields dropped, ``.gz`` inflated).
    With ``with_offsets`` the byte offset of every line is saved as ``offsets.npy`` (``n + 1``
    int64 values, the last one the file size) for :class:`DocStore`. Raises
    :class:`~searchr2.io.InputError` on the first bad line, or on a repeated id, or on an empty corpus;
    the caller is expected to write into an :func:`~searchr2.io.atomic_dir` so nothing half-made stays.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_path = out_dir / docs_name
    offsets: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    block_off: list[int] = []
    block_hash: list[int] = []
    position = 0
    n = 0
    with open(docs_path, "wb") as out:
        for _, pid, contents in iter_corpus(corpus_path, progress=True):
            line = (json.dumps({"id": pid, "contents": contents}, ensure_ascii=False) + "\n").encode("utf-8")
            out.write(line)
            block_off.append(position)
            block_hash.append(hash(pid))
            position += len(line)
            n += 1
            if len(block_off) >= 1 << 16:  # flush to compact numpy blocks (8 bytes a passage)
                offsets.append(np.asarray(block_off, dtype=np.int64))
                hashes.append(np.asarray(block_hash, dtype=np.int64))
                block_off, block_hash = [], []
    offsets.append(np.asarray(block_off + [position], dtype=np.int64))
    hashes.append(np.asarray(block_hash, dtype=np.int64))
    if n == 0:
        raise InputError(corpus_path, "the corpus has no passages")
    all_hashes = np.concatenate(hashes)
    if np.unique(all_hashes).size != n:
        _raise_duplicate(corpus_path, all_hashes)
    offsets_path = None
    if with_offsets:
        offsets_path = out_dir / OFFSETS_FILE
        np.save(offsets_path, np.concatenate(offsets))
    return CorpusCopy(n_docs=n, docs_path=docs_path, offsets_path=offsets_path)


def read_docs(docs_path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Stream ``(id, contents)`` from a normalised copy written by :func:`copy_corpus`."""
    with open(docs_path, "rb") as f:
        for line in f:
            record = json.loads(line)
            yield record["id"], record["contents"]


class DocStore:
    """Random access to the passages of a :func:`copy_corpus` copy: ``store[row] -> dict``.

    Only the offsets live in memory (memory-mapped); each lookup is one ``os.pread`` of one line,
    which is thread-safe because it does not move a shared file position.
    """

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        self.docs_path = directory / DOCS_FILE
        for p in (self.docs_path, directory / OFFSETS_FILE):
            if not p.exists():
                raise FileNotFoundError(f"docstore file missing: {p}")
        self.offsets = np.load(directory / OFFSETS_FILE, mmap_mode="r")
        self._fd = os.open(self.docs_path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, row: int) -> dict:
        """The stored record ``{"id", "contents"}`` of passage number ``row`` (0-based)."""
        if not 0 <= row < len(self):
            raise IndexError(f"passage row {row} out of range 0..{len(self) - 1}")
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        return json.loads(os.pread(self._fd, stop - start, start))

    def __getitem__(self, row: int) -> dict:
        """Passage ``row`` as ``{"id", "title", "text"}``."""
        record = self.raw(row)
        title, text = parse_contents(record["contents"])
        return {"id": record["id"], "title": title, "text": text}

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # best effort; explicit close() is preferred
        try:
            self.close()
        except Exception:
            pass
