"""The passage corpus: its line format, its title convention, and the one reader that validates it.

A corpus is jsonl with one passage a line, ``{"id": "<str>", "contents": "\\"Title\\"\\ntext"}``,
the layout of the wiki-18 DPR dump that Search-R1 (arXiv 2503.09516) indexes and the paper
(arXiv 2602.03647) searches. Everything that reads or writes such a file goes through here:

* the world stage writes it (:func:`format_contents`, :func:`passage_line`; :mod:`searchr2.world`
  for the embedded profile, :func:`searchr2.data.prepare_real_data` for wiki-18);
* the index builders copy it into their docstore (:func:`iter_passages`, via
  :func:`searchr2.docstore.copy_corpus`) and split each hit into title and text
  (:func:`parse_contents`);
* the tiny model's tokenizer is trained on its texts (:func:`corpus_texts`).

One reader streams the file a line at a time (``.gz`` inflated), so the 21M-passage wiki-18 never
sits in memory. Two rules check a line, because two kinds of file are read:

* a **wiki-18 source file** (:func:`iter_source_passages`): ``id`` a string or an integer
  (converted to a string), ``contents`` opening with a quoted title line;
* the **pipeline's corpus** (:func:`iter_passages`), which the world stage wrote: ``id`` a
  non-empty string, ``contents`` a non-blank string.

Both reject a repeated id at the line that repeats it, naming the line of its first use. Ids
written as canonical decimal integers (all of wiki-18's, and the embedded world's) are remembered
in a bitmap (about 2.6 MB for 21M ids) rather than as Python strings (about 1.5 GB); any other id
falls back to a set. A bad line is an :class:`~searchr2.io.InputError` naming the file, the line
and the field.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from searchr2.io import InputError, open_text, parse_jsonl_line, require_field, require_id

# Integer ids below this bound go into the duplicate bitmap (2**28 bits = 32 MiB at most);
# larger ones, and ids that are not canonical integers, go into a set.
_BITMAP_LIMIT = 1 << 28
# A byte progress bar over the corpus is refreshed every this many lines (cheaper than every line).
_PROGRESS_EVERY = 4096


# ---------------------------------------------------------------------------------------------
# The line format and the title convention
# ---------------------------------------------------------------------------------------------

def format_contents(title: str, text: str) -> str:
    """A passage's ``contents`` in the wiki-18 convention: the title in double quotes, a newline, the text."""
    return f'"{title}"\n{text}'


def passage_line(pid: str, contents: str) -> str:
    """One corpus line (with its newline): ``{"id", "contents"}`` as JSON, non-ASCII kept as is."""
    return json.dumps({"id": pid, "contents": contents}, ensure_ascii=False) + "\n"


def _is_quoted(title_line: str) -> bool:
    return len(title_line) >= 2 and title_line[0] == '"' and title_line[-1] == '"'


def has_quoted_title(contents: str) -> bool:
    """Does ``contents`` open with a title line in double quotes, followed by a newline (as wiki-18's do)?"""
    title_line, newline, _ = contents.partition("\n")
    return bool(newline) and _is_quoted(title_line)


def parse_contents(contents: str) -> tuple[str, str]:
    """Split a wiki-18 style ``contents`` into ``(title, text)``.

    The title is the first line with its surrounding double quotes removed; the text is the rest.
    A passage with no newline has an empty title and the whole string as its text.
    """
    title, sep, text = contents.partition("\n")
    if not sep:
        return "", contents.strip()
    title = title.strip()
    if _is_quoted(title):
        title = title[1:-1]
    return title.strip(), text.strip()


# ---------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------

class _IdSet:
    """Remembers seen passage ids cheaply: canonical integer ids in a bitmap, others in a set."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[str] = set()

    def add(self, pid: str) -> bool:
        """Record ``pid``; return False if it was already seen."""
        if pid.isascii() and pid.isdigit() and (pid == "0" or pid[0] != "0") and len(pid) < 10 \
                and int(pid) < _BITMAP_LIMIT:
            n = int(pid)
            byte, bit = n >> 3, 1 << (n & 7)
            if byte >= len(self._bits):
                self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
            if self._bits[byte] & bit:
                return False
            self._bits[byte] |= bit
            return True
        if pid in self._other:
            return False
        self._other.add(pid)
        return True


def _corpus_lines(path: Path, progress: tqdm | None) -> Iterator[tuple[int, dict]]:
    """Like :func:`searchr2.io.read_jsonl`, but advancing ``progress`` by bytes read from disk.

    For a .gz file the bar counts compressed bytes, so its total is the file size either way.
    """
    with open_text(path) as f:
        raw = f.buffer.fileobj if isinstance(f.buffer, gzip.GzipFile) else f.buffer
        done = 0
        for lineno, line in enumerate(f, start=1):
            if progress is not None and lineno % _PROGRESS_EVERY == 0:
                pos = raw.tell()
                progress.update(pos - done)
                done = pos
            record = parse_jsonl_line(line, path, lineno)
            if record is not None:
                yield lineno, record
        if progress is not None:
            progress.update(max(progress.total - done, 0) if progress.total else 0)


_Check = Callable[[dict, Path, int], tuple[str, str]]


def _source_passage(record: dict, path: Path, line: int) -> tuple[str, str]:
    """The wiki-18 source rule: ``id`` str or int, ``contents`` opening with a quoted title line."""
    pid = require_id(record, path, line)
    contents = require_field(record, "contents", str, path, line)
    if not has_quoted_title(contents):
        raise InputError(path, 'must start with a quoted title line, as in "\\"Title\\"\\ntext"',
                         line=line, field="contents")
    return pid, contents


def _pipeline_passage(record: dict, path: Path, line: int) -> tuple[str, str]:
    """The pipeline corpus rule: ``id`` a non-empty string, ``contents`` a non-blank string."""
    pid = require_field(record, "id", str, path, line)
    contents = require_field(record, "contents", str, path, line)
    if not contents.strip():
        raise InputError(path, "is blank", line=line, field="contents")
    return pid, contents


def _passages(path: str | os.PathLike, check: _Check, progress: tqdm | None) -> Iterator[tuple[int, str, str]]:
    """Stream ``(line, id, contents)`` checked by ``check``; a repeated id is a located error."""
    path = Path(path)
    seen = _IdSet()
    for line, record in _corpus_lines(path, progress):
        pid, contents = check(record, path, line)
        if not seen.add(pid):
            # Only on error: read the file again up to the first use of the id, to name its line.
            first = next(n for n, r in _corpus_lines(path, None) if check(r, path, n)[0] == pid)
            raise InputError(path, f"duplicate passage id {pid!r} (first used at line {first})",
                             line=line, field="id")
        yield line, pid, contents


def iter_source_passages(path: str | os.PathLike, progress: tqdm | None = None) -> Iterator[dict]:
    """Stream the validated passages ``{"id": str, "contents": str}`` of a wiki-18 jsonl(.gz).

    Each passage needs an ``id`` (string, or integer converted to string), and ``contents`` holding
    a quoted title line, a newline, then the text. Extra keys are dropped. Blank lines are skipped.
    A malformed line or a repeated id raises :class:`InputError` with the file and line.
    ``progress``, a byte-counting tqdm bar (see :func:`byte_progress`), is advanced as the file is read.
    """
    for _, pid, contents in _passages(path, _source_passage, progress):
        yield {"id": pid, "contents": contents}


def iter_passages(path: str | os.PathLike, progress: tqdm | None = None) -> Iterator[tuple[int, str, str]]:
    """Stream ``(line_number, id, contents)`` from the pipeline's corpus jsonl(.gz), validating each line.

    Checks JSON syntax, the types of ``id`` and ``contents``, that neither is empty, and that no id
    repeats. ``progress`` as in :func:`iter_source_passages`.
    """
    return _passages(path, _pipeline_passage, progress)


def corpus_texts(path: str | os.PathLike) -> Iterator[str]:
    """The ``contents`` of every passage of the pipeline's corpus, in file order."""
    for _, _, contents in iter_passages(path):
        yield contents


def byte_progress(path: str | os.PathLike, desc: str) -> tqdm:
    """A progress bar over the bytes of ``path`` (its size on disk, compressed or not), for the readers above."""
    path = Path(path)
    return tqdm(total=path.stat().st_size if path.is_file() else None, desc=desc, unit="B", unit_scale=True)


__all__ = ["byte_progress", "corpus_texts", "format_contents", "has_quoted_title", "iter_passages",
           "iter_source_passages", "parse_contents", "passage_line"]
