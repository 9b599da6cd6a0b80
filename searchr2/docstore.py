"""The prepared corpus as a passage store: passage ``row`` read from disk by its byte offset.

The pipeline keeps one copy of the corpus, ``data/corpus/corpus.jsonl`` (stage ``world``). Both
indexes refer to it by row, the passage's 0-based position among the file's non-blank lines: a FAISS
vector number is a row, and the BM25 index stores the row as its document id. Turning a hit back into
its passage is the job of this module:

* :func:`write_offsets` scans the corpus once and saves the byte offset of each passage line beside
  it (:func:`offsets_path`, ``corpus.offsets.npy``: ``n + 1`` int64 values, the last the file size).
  Stage ``world`` writes it with the corpus. It is 8 bytes a passage, 168 MB for wiki-18's 21M.
* :class:`DocStore` reads passage ``row`` with one positioned read (``os.pread``): only the offsets
  are mapped into memory, never the corpus, and lookups are safe from several threads.

The corpus must be the uncompressed jsonl (a gzip stream cannot be read at an offset).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from searchr2.corpus import parse_contents
from searchr2.io import atomic_file

_BLOCK = 1 << 16  # offsets gathered in numpy blocks of this many passages (8 bytes each, not a Python int each)


def offsets_path(corpus_path: str | os.PathLike) -> Path:
    """Where the offsets of ``corpus_path`` live: beside it, ``<stem>.offsets.npy``."""
    corpus_path = Path(corpus_path)
    return corpus_path.with_name(corpus_path.name.split(".")[0] + ".offsets.npy")


def write_offsets(corpus_path: str | os.PathLike) -> int:
    """Save the byte offset of every non-blank line of ``corpus_path`` to :func:`offsets_path` (atomically);
    return the number of passages.

    Lines are not parsed here: the index builders validate every passage as they read it (see
    :func:`searchr2.corpus.iter_passages`, which skips the same blank lines) and check that their count
    matches. Reads the file as bytes, about as fast as the disk gives it. Memory stays flat: offsets go
    to disk a block at a time, and the ``.npy`` header, which needs the count, is written before them
    once the count is known.
    """
    corpus_path = Path(corpus_path)
    if corpus_path.name.endswith(".gz"):
        raise ValueError(f"{corpus_path}: a passage store needs the uncompressed jsonl (a gzip stream cannot "
                         "be read at an offset)")
    target = offsets_path(corpus_path)
    with tempfile.TemporaryFile(dir=target.parent) as raw:    # the int64 offsets, before the header
        block: list[int] = []
        position = n = 0
        with open(corpus_path, "rb") as f:
            for line in f:
                if position == 0 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM is not part of the record
                    position, line = 3, line[3:]
                if line.strip():
                    block.append(position)
                    if len(block) == _BLOCK:
                        raw.write(np.asarray(block, dtype=np.int64).tobytes())
                        n += len(block)
                        block = []
                position += len(line)
        raw.write(np.asarray(block + [position], dtype=np.int64).tobytes())
        n += len(block)
        raw.seek(0)
        with atomic_file(target, "wb") as out:
            np.lib.format.write_array_header_1_0(out, {"descr": "<i8", "fortran_order": False, "shape": (n + 1,)})
            shutil.copyfileobj(raw, out, 1 << 20)
    return n


class DocStore:
    """Random access to the passages of the prepared corpus: ``store[row] -> {"id", "title", "text"}``.

    Only the offsets live in memory (memory-mapped); each lookup is one ``os.pread`` of one line, which
    is thread-safe because it does not move a shared file position.
    """

    def __init__(self, corpus_path: str | os.PathLike):
        self.corpus_path = Path(corpus_path)
        offsets = offsets_path(self.corpus_path)
        for path, what in ((self.corpus_path, "corpus"), (offsets, "corpus offsets")):
            if not path.exists():
                raise FileNotFoundError(f"{what} file missing: {path} (stage `world` writes both; a corpus of "
                                        "your own gets its offsets from searchr2.docstore.write_offsets)")
        self.offsets = np.load(offsets, mmap_mode="r")
        if int(self.offsets[-1]) != self.corpus_path.stat().st_size:
            raise ValueError(f"{offsets} does not belong to {self.corpus_path}: it ends at byte "
                             f"{int(self.offsets[-1])}, the corpus has {self.corpus_path.stat().st_size} bytes; "
                             "the corpus changed after its offsets were written (rerun `dvc repro world`)")
        self._fd = os.open(self.corpus_path, os.O_RDONLY)

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
