"""What every DVC stage entry point shares: a command line, a clean exit on bad input, offline defaults.

The standard paths and model names are in :mod:`searchr2.paths` (the library reads them too).
Importing this module sets environment variables (below), which is why the library never imports it.

Command line: ``python -m stages.<name> --help`` (or ``-h``) prints the stage's module docstring (what
it does, reads and writes) and exits 0 without running it; an argument the stage does not take is an
error (usage message, exit status 2). :func:`run_stage` does this for every stage, so a new stage
only needs a docstring; a stage with arguments of its own (``evaluate <model>``) adds them to
:func:`stage_parser` and hands the parsed namespace to :func:`run_stage`.

A stage that meets bad input (a malformed corpus line, a wrong param) prints one located message
(``file:line: field 'x': ...``) and exits with status 2, without a Python traceback burying it.
Bugs still raise normally, with their traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from searchr2.io import InputError

# Offline by default: nothing in the embedded profile needs the network, and a stray hub call
# should fail fast instead of hanging. Paper profiles that do download set these to 0 themselves.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OPENAI_API_KEY", "unused-offline")  # pyserini imports an OpenAI client at import time


def read_stage_json(path: Path, made_by: str) -> dict:
    """A JSON file another stage wrote: missing, it names the stage to run (``made_by``); broken, it is an
    :class:`InputError` naming the file and line."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run `dvc repro {made_by}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON: {e.msg}", line=e.lineno) from None


def stage_parser(doc: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The command line of the stage being run, with no arguments yet.

    ``doc`` (default: the docstring of the ``__main__`` module, i.e. the stage's own) is the ``--help``
    text, printed as written; ``prog`` defaults to ``python -m <that module>``.
    """
    entry = sys.modules.get("__main__")
    if doc is None:
        doc = getattr(entry, "__doc__", None)
    if prog is None:
        spec = getattr(entry, "__spec__", None)
        prog = f"python -m {spec.name}" if spec is not None and spec.name else None
    return argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every stage reads params.yaml. Run stages through `dvc repro <stage>`, so that DVC\n"
               "records what they read and wrote (dvc.yaml lists both).")


def run_stage(name: str, main: Callable[[], dict | None], args: argparse.Namespace | None = None,
              argv: list[str] | None = None) -> None:
    """Parse the command line, run a stage's ``main``, report its wall time, turn bad input into a one-line error.

    ``args``: the command line, already parsed with the stage's own :func:`stage_parser`. Without it
    the stage takes no arguments: ``argv`` (default ``sys.argv[1:]``) may only ask for ``--help``,
    which prints the stage's docstring and exits 0 before ``main`` runs; anything else exits 2.

    SIGTERM (what `kill` and schedulers send) becomes a normal exit, so the ``finally``/``except``
    blocks of the atomic writers run and remove their temporary outputs.
    """
    if args is None:
        stage_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    start = time.perf_counter()
    try:
        main()
    except InputError as e:
        print(f"[{name}] bad input: {e}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as e:
        print(f"[{name}] {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"[{name}] done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
