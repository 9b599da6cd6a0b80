"""What the benchmark scripts record about a run, written once for all of them: the model as a
repository-relative path, the processor, the load average around the timed part (the machine may be
shared, and a busy neighbour makes every figure pessimistic), and the result file itself.

Imported by the scripts in this folder after they put the repository root on ``sys.path``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def model_label(model: Path) -> str:
    """The model directory relative to the repository when it lies inside it (as named: a symlinked
    ``data/`` stays ``data/...``), else its absolute path."""
    model = Path(os.path.abspath(model))
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


def _tree_rss(proc) -> int:
    """Resident bytes of a psutil process and all its descendants (processes that vanish count 0)."""
    import psutil

    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def run_worker(script: str, argv: list[str], result_path: Path, log_path: Path) -> dict:
    """Run ``python <script> worker <argv>`` with the repository on its path and its output in ``log_path``,
    sampling its process tree's memory every 0.1 s; return the JSON it wrote to ``result_path`` plus
    ``maxrss_mb`` (the kernel's high-water mark from ``wait4``), ``peak_tree_rss_mb`` (the sampled peak
    over the worker and its children, e.g. Java) and ``child_wall_seconds``. A failed worker stops the
    benchmark with the end of its log."""
    import subprocess
    import sys
    import time

    import psutil

    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, script, "worker", *argv], stdout=log, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
        ps = psutil.Process(child.pid)
        peak = 0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.1)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"worker {' '.join(argv[:4])} failed ({code}); log: {log_path}\n" + log_path.read_text()[-3000:])
    result = json.loads(Path(result_path).read_text())
    result.update(maxrss_mb=round(usage.ru_maxrss / 1024, 1), peak_tree_rss_mb=round(peak / 2**20, 1),
                  child_wall_seconds=round(time.perf_counter() - t0, 2))
    return result


def lscpu() -> dict:
    """The processor's model name, vendor, family and model numbers (a virtual machine may name it only
    "Intel(R) Xeon(R) Processor"; the numbers tell its generation, and OpenBLAS picks its kernel by them),
    CPU count and the vector flags that decide these benchmarks' speed."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {"model": fields.get("Model name", "").strip(), "cpus": fields.get("CPU(s)", "").strip(),
            "vendor_family_model": "/".join(fields.get(k, "").strip() for k in ("Vendor ID", "CPU family", "Model")),
            "flags_of_note": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]}


def markdown_head(name: str, result: dict, torch_version: str, threads: int, details: str = "") -> list[str]:
    """The first lines of a result's Markdown: its name, then the processor (``result["cpu"]``, from
    :func:`lscpu`), torch, threads, ``details`` and the load averages around the timed part."""
    cpu = result.get("cpu") or {}
    return [f"# {name}", "", f"{cpu.get('model')} ({cpu.get('cpus')} CPUs; {', '.join(cpu.get('flags_of_note', []))}), "
            f"torch {torch_version}, {threads} threads; {details + '; ' if details else ''}load before "
            f"{result['loadavg_before']}, after {result['loadavg_after']}", ""]
