"""Every command-line entry point answers ``--help`` / ``-h`` with its docstring and rejects unknown arguments.

Entry points are found, not listed: each ``stages/*.py`` (``python -m stages.<name>``), each
``searchr2/*.py`` and ``benchmarks/*.py`` with an ``if __name__ == "__main__":`` block. Each runs as a
subprocess in an empty working directory of its own, so a command that did work instead of answering
would leave files there (every stage writes relative to its working directory) or print a stage's
completion line. The commands only import modules, so they run a few at a time (one module-scoped
fixture); the tests then check what each printed.
"""
import ast
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ENV, ROOT

#: arguments an entry point requires, given with ``--no-such-flag`` so that the flag is what argparse
#: rejects (a new entry point with required arguments adds its own here)
REQUIRED = {
    "stages.evaluate": ["rl"],
    "stages.evaluate_refiner": ["rl"],
    "searchr2.profile": ["configs/smoke.yaml"],
    "searchr2.curves": ["results/rl", "out.png"],
    "searchr2.jvm": ["json.tool"],
    "benchmarks/bench_dense_split.py": ["data/index/dense", "data/qa"],
    "benchmarks/bench_index.py": ["--world-entities", "0", "--name", "x"],
    "benchmarks/bench_faiss_flat.py": ["--json", "x.json"],
}
#: seconds a --help may take: imports only (the slowest stages import torch and transformers), a few
#: at a time on a loaded machine; real work (a model, an index, a world) takes far longer
HELP_SECONDS = 90
#: what stages.evaluate says to a wrong number or name of models
EVALUATE_MISUSE = {"no model": ([], "the following arguments are required: model"),
                   "unknown model": (["ppo"], "argument model: invalid choice: 'ppo'"),
                   "two models": (["rl", "sft"], "unrecognized arguments: sft")}


def _has_main_block(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text()


def entry_points() -> list[tuple[str, list[str], Path]]:
    """(name, command after the interpreter, source file) of every entry point in the repository."""
    found = [(f"stages.{p.stem}", ["-m", f"stages.{p.stem}"], p)
             for p in sorted((ROOT / "stages").glob("*.py")) if p.name != "__init__.py"]
    found += [(f"searchr2.{p.stem}", ["-m", f"searchr2.{p.stem}"], p)
              for p in sorted((ROOT / "searchr2").glob("*.py")) if _has_main_block(p)]
    found += [(f"benchmarks/{p.name}", [str(p)], p)
              for p in sorted((ROOT / "benchmarks").glob("*.py")) if _has_main_block(p)]
    return found


ENTRY_POINTS = entry_points()
IDS = [name for name, _, _ in ENTRY_POINTS]


def _run(command: list[str], args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *command, *args], cwd=cwd, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(ROOT)}, timeout=300)
    return proc, time.perf_counter() - start


def _bench_results() -> dict:
    """What the benchmarks' result folder holds (a benchmark that ran would add or rewrite a file)."""
    folder = ROOT / "benchmarks" / "results"
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.is_dir() else {}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """``{(name, case): (working directory, process, seconds)}`` for every entry point and case, plus
    the benchmark results before and after all of them under the key ``"bench_results"``."""
    cases = {}
    for name, command, _ in ENTRY_POINTS:
        cases[name, "--help"] = (command, ["--help"])
        cases[name, "-h"] = (command, ["-h"])
        cases[name, "unknown"] = (command, ["--no-such-flag", *REQUIRED.get(name, [])])
    for case, (args, _) in EVALUATE_MISUSE.items():
        cases["stages.evaluate", case] = (["-m", "stages.evaluate"], args)
    before = _bench_results()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs = {}
        for key, (command, args) in cases.items():
            cwd = tmp_path_factory.mktemp("cwd")
            jobs[key] = (cwd, pool.submit(_run, command, args, cwd))
        results = {key: (cwd, *job.result()) for key, (cwd, job) in jobs.items()}
    return {**results, "bench_results": (before, _bench_results())}


def test_entry_points_are_found():
    names = set(IDS)
    assert {"stages.world", "stages.rl", "stages.evaluate", "stages.report", "searchr2.experiments",
            "searchr2.profile", "searchr2.curves", "searchr2.jvm", "benchmarks/bench_rl.py"} <= names
    assert "stages.__init__" not in names and "benchmarks/run_info.py" not in names


@pytest.mark.parametrize("name,command,source", ENTRY_POINTS, ids=IDS)
def test_help_prints_the_docstring_and_does_nothing_else(name, command, source, ran):
    first_line = ast.get_docstring(ast.parse(source.read_text())).splitlines()[0]
    for flag in ("--help", "-h"):
        cwd, proc, seconds = ran[name, flag]
        assert proc.returncode == 0, f"{name} {flag}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
        assert proc.stdout.startswith("usage: ") and first_line in proc.stdout, proc.stdout[:2000]
        assert "done in" not in proc.stderr, proc.stderr[-2000:]
        assert list(cwd.iterdir()) == [], f"{name} {flag} wrote {sorted(cwd.iterdir())}"
        assert seconds < HELP_SECONDS, f"{name} {flag} took {seconds:.0f} s"


def test_no_benchmark_result_was_written(ran):
    before, after = ran["bench_results"]
    assert after == before


@pytest.mark.parametrize("name,command,source", ENTRY_POINTS, ids=IDS)
def test_an_unknown_argument_is_a_usage_error(name, command, source, ran):
    cwd, proc, _ = ran[name, "unknown"]
    assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{proc.stdout[-1000:]}\n{proc.stderr[-2000:]}"
    assert proc.stderr.startswith("usage: "), proc.stderr[-2000:]
    assert "error: unrecognized arguments: --no-such-flag" in proc.stderr, (
        f"{name}: {proc.stderr[-1000:]}\n(an entry point with required arguments lists them in REQUIRED)")
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("case", list(EVALUATE_MISUSE))
def test_evaluate_takes_exactly_one_model_name(case, ran):
    args, message = EVALUATE_MISUSE[case]
    cwd, proc, _ = ran["stages.evaluate", case]
    assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-1000:])
    assert proc.stderr.startswith("usage: python -m stages.evaluate [-h] {base,sft,rl}")
    assert list(cwd.iterdir()) == []
