"""The passage corpus: its line format, its title convention, and the one reader that validates it.

The pipeline's corpus is jsonl with one passage a line, ``{"id": "<str>", "contents": "\\"Title\\"\\ntext"}``:
the layout of the wiki-18 dump (DPR's 2018 Wikipedia cut into 100-word passages) that Search-R1
(arXiv 2503.09516) and FlashRAG distribute and index, and that the paper (arXiv 2602.03647)
searches. Everything that reads or writes such a file goes through here:

* the world stage writes it (:func:`format_contents`, :func:`passage_line`): :mod:`searchr2.world`
  generates it for the embedded profile, :func:`searchr2.data.prepare_real_data` copies wiki-18
  through :func:`iter_source_passages` for the paper profiles;
* the index builders copy it into their docstore (:func:`iter_passages`, via
  :func:`searchr2.docstore.copy_corpus`) and split each hit into title and text
  (:func:`parse_contents`);
* the tiny model's tokenizer is trained on its texts (:func:`corpus_texts`).

**The title convention.** In ``contents`` the title is the first line and the text is everything
after the first newline; this is how Search-R1's and FlashRAG's retrieval code split a passage
(``contents.split("\\n")[0]`` and the rest). The published wiki-18 file writes the title line
in double quotes when the title holds a space or punctuation (``"\\"Evan Morris\\"\\nEvan
L. Morris ..."``), bare otherwise (``"Absalon\\nAbsalon (1128 - 1201) was ..."``, about one line in
eight). Both spellings mean the same title, so :func:`parse_contents` removes one pair of surrounding
double quotes when both are present and returns the same ``(title, text)`` for either. The pipeline
writes one canonical form, the quoted one (:func:`format_contents`), so the copy made from a source
file spells every title the same way.

**Source files** (:func:`iter_source_passages`, the ``data.corpus_path`` a paper profile's world
stage copies) come in either of two layouts and are normalised to the canonical ``contents``:

* ``{"id", "contents"}``, wiki-18's: ``contents`` must hold a title line, a newline, and a
  non-blank text. A ``contents`` without any newline is refused rather than read as a passage with
  an empty title: Search-R1 and FlashRAG would read that whole string as the *title* and give the
  passage no text, while reading it as a text with no title would silently disagree with them; such
  a file is more likely a corpus of bare texts, which belongs in the second layout. An empty
  first line (``"\\ntext"``) is a title that is present but empty, and is accepted.
* ``{"id", "title", "text"}``, the columns of DPR's passage file, kept by corpora converted from
  it: ``title`` a string (may be empty; one line), ``text`` a non-blank string; ``contents``
  becomes ``format_contents(title, text)``.

A line carrying ``contents`` together with ``title`` and/or ``text`` is accepted only when they say
the same thing (``title`` equal to the title line, ``text`` equal to the text, surrounding white space
aside); ``contents`` is then used. If they differ, or if a line has neither ``contents`` nor
``title``/``text``, the line is refused. ``id`` is a string or an integer (converted to a string).
Extra keys are dropped. Titles and texts lose surrounding white space.

**The pipeline's corpus** (:func:`iter_passages`), which only the world stage writes, is checked
for what the index builders rely on: ``id`` a non-empty string, ``contents`` a non-blank string.

**Reading.** One reader streams the file a line at a time (gzip inflated, a UTF-8 byte-order mark
skipped; :func:`searchr2.io.open_text`), so the 21M-passage wiki-18 never sits in memory. Both rules
reject a repeated id at the line that repeats it, naming the line of its first use. The set of ids
seen is the one thing that grows with the corpus: ids written as canonical decimal integers (all of
wiki-18's, and the embedded world's) are remembered in a bitmap (about 2.6 MB for 21M ids) rather
than as Python strings (about 1.5 GB); any other id falls back to a set. A bad line is an
:class:`~searchr2.io.InputError` naming the file, the line and the field.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from searchr2.io import InputError, open_text, parse_jsonl_line, require_field, require_id, text_lines

# Integer ids below this bound go into the duplicate bitmap (2**28 bits = 32 MiB at most);
# larger ones, and ids that are not canonical integers, go into a set.
_BITMAP_LIMIT = 1 << 28
# A byte progress bar over the corpus is refreshed every this many lines (cheaper than every line).
_PROGRESS_EVERY = 4096


# ---------------------------------------------------------------------------------------------
# The line format and the title convention
# ---------------------------------------------------------------------------------------------

def format_contents(title: str, text: str) -> str:
    """A passage's canonical ``contents``: the title in double quotes, a newline, the text.

    The title must be one line (a newline in it would move the boundary :func:`parse_contents`
    finds). For a title and text without surrounding white space,
    ``parse_contents(format_contents(title, text)) == (title, text)``.
    """
    if "\n" in title:
        raise ValueError(f"a passage title must be one line, got {title!r}")
    return f'"{title}"\n{text}'


def passage_line(pid: str, contents: str) -> str:
    """One corpus line (with its newline): ``{"id", "contents"}`` as JSON, non-ASCII kept as is."""
    return json.dumps({"id": pid, "contents": contents}, ensure_ascii=False) + "\n"


def _is_quoted(title_line: str) -> bool:
    return len(title_line) >= 2 and title_line[0] == '"' and title_line[-1] == '"'


def parse_contents(contents: str) -> tuple[str, str]:
    """Split a ``contents`` into ``(title, text)``: the first line, and everything after it.

    The title loses one pair of surrounding double quotes when it has them, so wiki-18's quoted
    (``"\\"Evan Morris\\"\\n..."``) and bare (``"Absalon\\n..."``) title lines give the same result;
    both parts lose surrounding white space. This splitter is total, for reading hits from a
    corpus already validated: a string with no newline comes back as ``("", contents)``. Whether
    such a passage is acceptable is the readers' decision (:func:`iter_source_passages` refuses it).
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
        for lineno, line in text_lines(f, path):
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


def _source_contents(record: dict, path: Path, line: int) -> str:
    """The canonical ``contents`` of one source line, in either layout (see the module docstring)."""
    has_title, has_text = "title" in record, "text" in record
    if "contents" in record:
        contents = require_field(record, "contents", str, path, line)
        if "\n" not in contents:
            raise InputError(path, "has no title line: expected the title, a newline, then the text "
                             """(as in wiki-18: "\\"Title\\"\\ntext"); a corpus of bare texts needs 'title' """
                             "and 'text' fields instead", line=line, field="contents")
        title, text = parse_contents(contents)
        if not text:
            raise InputError(path, "has a title line but no text", line=line, field="contents")
        # title/text beside contents: accepted only when they repeat what contents holds.
        if has_title:
            given = require_field(record, "title", str, path, line, nonempty=False).strip()
            if given not in (title, contents.partition("\n")[0].strip()):
                raise InputError(path, f"{given!r} differs from the title line of 'contents' ({title!r}); "
                                 "give either 'contents' or 'title' and 'text'", line=line, field="title")
        if has_text and require_field(record, "text", str, path, line, nonempty=False).strip() != text:
            raise InputError(path, "differs from the text in 'contents' (after its title line); "
                             "give either 'contents' or 'title' and 'text'", line=line, field="text")
    elif has_title or has_text:
        title = require_field(record, "title", str, path, line, nonempty=False).strip()
        text = require_field(record, "text", str, path, line).strip()
        if "\n" in title:
            raise InputError(path, "spans several lines; a title is one line", line=line, field="title")
        if not text:
            raise InputError(path, "is blank", line=line, field="text")
    else:
        raise InputError(path, "missing: a passage needs 'contents' (title line, newline, text), "
                         "or 'title' and 'text'", line=line, field="contents")
    return format_contents(title, text)


def _source_passage(record: dict, path: Path, line: int) -> tuple[str, str]:
    """The source rule: ``id`` str or int; ``contents`` or ``title``/``text``, made canonical."""
    pid = require_id(record, path, line)
    return pid, _source_contents(record, path, line)


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
    """Stream the validated passages of a wiki-18 style source jsonl(.gz) as ``{"id": str, "contents": str}``.

    Lines are ``{"id", "contents"}`` (the title line quoted or bare) or ``{"id", "title", "text"}``;
    ``contents`` comes out in the canonical form, title quoted (:func:`format_contents`), whichever
    the source used; the module docstring gives the rules. Integer ids become strings, extra keys
    are dropped, blank lines are skipped. A malformed line or a repeated id raises :class:`InputError`
    with the file, the line and the field. ``progress``, a byte-counting tqdm bar (see
    :func:`byte_progress`), is advanced as the file is read.
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


__all__ = ["byte_progress", "corpus_texts", "format_contents", "iter_passages", "iter_source_passages",
           "parse_contents", "passage_line"]
