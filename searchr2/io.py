"""File input/output shared by every stage: located input errors and atomic outputs.

Two promises live here:

* Bad input is reported as an :class:`InputError` that names the file, the line (1-based) and
  the field, so a researcher can open the file at the right place.
* Outputs appear complete or not at all. Everything is written to a temporary sibling first and
  renamed into place only when the writer finished without an exception, so a killed stage never
  leaves a half-written file that a later stage (or DVC) could mistake for a finished one.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator


class InputError(ValueError):
    """Bad input, located: ``path:line: field 'x': message``."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = message if field is None else f"field '{field}': {message}"
        super().__init__(f"{where}: {what}")


_GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: str | os.PathLike) -> Any:
    """Open a UTF-8 text file for reading, inflating gzip on the fly; a byte-order mark is skipped.

    A file is read as gzip when its name ends in ``.gz`` or when its first two bytes are gzip's
    magic number (a download saved without the suffix). Some exporters put a UTF-8 byte-order mark
    (BOM) before the first line; ``utf-8-sig`` drops it there and nowhere else, so the first record
    of such a file parses like the others. Iterate the lines with :func:`text_lines` to get
    decoding and decompression failures as :class:`InputError`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    gz = path.suffix == ".gz"
    if not gz and path.is_file():
        with open(path, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, "r", encoding="utf-8-sig")


def text_lines(f: Any, path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` for each line of ``f`` (from :func:`open_text`), numbered from 1.

    Bytes that are not UTF-8, and a gzip stream that is corrupt or cut short (an interrupted
    download), raise :class:`InputError` naming the file and the last line read intact. The text is
    decoded in blocks, so the bad byte lies somewhere after that line rather than exactly on the next.
    """
    lineno = 0
    try:
        for lineno, line in enumerate(f, start=1):
            yield lineno, line
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason}) after line {lineno}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(path, f"gzip data corrupt or cut short after line {lineno} ({e})") from None


def sha256_file(path: str | os.PathLike, h: Any = None) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks.

    With ``h`` (a ``hashlib`` hash object) the bytes are added to that hash instead and its digest so far is
    returned, so that several files can be folded into one fingerprint.
    """
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Stream ``(line_number, record)`` from a jsonl(.gz) file, one line at a time.

    Blank lines are skipped and a leading byte-order mark is ignored (see :func:`open_text`). A line
    that is not a JSON object, or a file that is not UTF-8 or not intact gzip, raises :class:`InputError`.
    """
    with open_text(path) as f:
        for lineno, line in text_lines(f, path):
            record = parse_jsonl_line(line, path, lineno)
            if record is not None:
                yield lineno, record


def parse_jsonl_line(line: str, path: str | os.PathLike, lineno: int) -> dict | None:
    """One jsonl line as a JSON object; None for a blank line; a located :class:`InputError` otherwise."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg} at column {e.colno})", line=lineno) from None
    if not isinstance(record, dict):
        raise InputError(path, f"expected a JSON object, got {type(record).__name__}", line=lineno)
    return record


def require_field(record: dict, field: str, kind: type | tuple[type, ...], path: str | os.PathLike,
                  line: int | None, nonempty: bool = True) -> Any:
    """Return ``record[field]`` after checking presence, type and (optionally) non-emptiness."""
    if field not in record:
        raise InputError(path, "missing", line=line, field=field)
    value = record[field]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(path, f"expected {names}, got {type(value).__name__}", line=line, field=field)
    if nonempty and hasattr(value, "__len__") and len(value) == 0:
        raise InputError(path, "is empty", line=line, field=field)
    return value


def require_id(record: dict, path: str | os.PathLike, line: int | None, field: str = "id") -> str:
    """Return ``record[field]`` as a non-blank string id; integer ids are accepted and converted.

    FlashRAG QA records and wiki-18 passages both carry ids that are sometimes JSON integers. A bool
    (an int in Python) is refused, as is a missing, empty or blank id, each with a located error.
    """
    value = require_field(record, field, (str, int), path, line)
    if isinstance(value, bool):
        raise InputError(path, "expected str or int, got bool", line=line, field=field)
    value = str(value)
    if not value.strip():
        raise InputError(path, "is blank", line=line, field=field)
    return value


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    # mkdtemp/mkstemp create private (0700/0600) entries; outputs get ordinary permissions.
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        tmp.chmod(0o755)
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o644)
    return Path(name)


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` only on success."""
    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=True)
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file (text ``"w"`` or binary ``"wb"``) that replaces ``path`` on success."""
    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=False)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write records as jsonl; return how many were written."""
    n = 0
    with atomic_file(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write a small JSON document (metrics, manifests)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")
