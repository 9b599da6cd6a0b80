"""Random access to the corpus by passage row, without holding it in RAM.

Both indexes keep a copy of the corpus beside them, so a search hit (a row number) can be turned
back into its passage:

* :func:`copy_corpus` streams the corpus once through :func:`searchr2.corpus.iter_passages` (which
  checks every line: valid JSON, ``id`` a non-empty string, ``contents`` a non-blank string, no
  repeated id; a bad line is an :class:`~searchr2.io.InputError` naming the file, the line and the
  field) and writes a normalised copy plus the byte offset of each of its lines.
* :class:`DocStore` reads passage ``i`` with one positioned read (``os.pread``), so a 21M-passage
  corpus costs only its offset array in memory and lookups are safe from several threads.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from searchr2.corpus import byte_progress, iter_passages, parse_contents, passage_line
from searchr2.io import InputError

DOCS_FILE = "docs.jsonl"
OFFSETS_FILE = "offsets.npy"


@dataclass(frozen=True)
class CorpusCopy:
    """What :func:`copy_corpus` wrote: the number of passages and the two file paths."""

    n_docs: int
    docs_path: Path
    offsets_path: Path | None


def copy_corpus(corpus_path: str | os.PathLike, out_dir: str | os.PathLike, with_offsets: bool = True,
                docs_name: str = DOCS_FILE) -> CorpusCopy:
    """Validate the corpus while copying it to ``out_dir/docs_name`` as normalised jsonl.

    Each output line is ``{"id": ..., "contents": ...}`` (other fields dropped, ``.gz`` inflated).
    With ``with_offsets`` the byte offset of every line is saved as ``offsets.npy`` (``n + 1``
    int64 values, the last one the file size) for :class:`DocStore`. Raises
    :class:`~searchr2.io.InputError` on the first bad line (a repeated id included) or on an empty corpus;
    the caller is expected to write into an :func:`~searchr2.io.atomic_dir` so nothing half-made stays.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_path = out_dir / docs_name
    offsets: list[np.ndarray] = []
    block: list[int] = []
    position = 0
    n = 0
    with open(docs_path, "wb") as out, byte_progress(corpus_path, f"reading {Path(corpus_path).name}") as bar:
        for _, pid, contents in iter_passages(corpus_path, bar):
            line = passage_line(pid, contents).encode("utf-8")
            out.write(line)
            block.append(position)
            position += len(line)
            n += 1
            if len(block) >= 1 << 16:  # flush to compact numpy blocks (8 bytes a passage)
                offsets.append(np.asarray(block, dtype=np.int64))
                block = []
    offsets.append(np.asarray(block + [position], dtype=np.int64))
    if n == 0:
        raise InputError(corpus_path, "the corpus has no passages")
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
