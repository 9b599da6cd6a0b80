"""What every DVC stage entry point shares: a clean exit on bad input, and offline defaults.

The standard paths and model names are in :mod:`searchr2.paths` (the library reads them too).
Importing this module sets environment variables (below), which is why the library never imports it.

A stage that meets bad input (a malformed corpus line, a wrong param) prints one located message
(``file:line: field 'x': ...``) and exits with status 2, without a Python traceback burying it.
Bugs still raise normally, with their traceback.
"""
from __future__ import annotations

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


def run_stage(name: str, main: Callable[[], dict | None]) -> None:
    """Run a stage's ``main``; report its wall time; turn bad input into a one-line error.

    SIGTERM (what `kill` and schedulers send) becomes a normal exit, so the ``finally``/``except``
    blocks of the atomic writers run and remove their temporary outputs.
    """
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

