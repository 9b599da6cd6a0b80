"""What the benchmark scripts record about a run, written once for all of them: the model as a
repository-relative path, the processor, the load average around the timed part (the machine may be
shared, and a busy neighbour makes every figure pessimistic), and the result file itself.

Imported by the scripts in this folder after they put the repository root on ``sys.path``.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def model_label(model: Path) -> str:
    """The model directory relative to the repository when it lies inside it, else its absolute path."""
    model = Path(model).resolve()
    return str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model)


def machine_line() -> str:
    """The processor and the number of cores, in one line."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def loadavg_fields(before: tuple[float, float, float]) -> dict:
    """``loadavg_before`` (``before``, taken with :func:`os.getloadavg` before the timed part) and
    ``loadavg_after`` (now), each the three averages rounded to two decimals."""
    return {"loadavg_before": [round(x, 2) for x in before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def write_result(path: Path, result: dict, indent: int = 2) -> None:
    """Write a result file as indented JSON with a final newline, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent) + "\n")
