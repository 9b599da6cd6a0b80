"""Shared test helpers: a throw-away copy of the repository to run stages and DVC in."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What subprocesses (stages, dvc) get: offline, no telemetry, this interpreter's venv first on PATH.
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "true", "ITERATIVE_DO_NOT_TRACK": "1",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(cmd, cwd, check=True, **kw):
    """Run a command, returning the CompletedProcess; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_repo(dest: Path) -> Path:
    """Copy the tracked and not-ignored files of the repo into ``dest`` and make it a git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture
def repo_copy(tmp_path):
    return copy_repo(tmp_path / "repo")


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state, fixed by the first ``Accelerator``; a stage process builds
    one, but a test session builds many, with different precisions. Each test starts without one."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine two threads thrash.

    Modules that run tiny models use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


NAMES = ["Varen Koltho", "Mira Tesk", "Orvane Bay", "Kethra University", "Lumsey Dal"]


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted from its wheel, as stage `model` does, once per test session (~20 s)."""
    from searchr2.models import ModelConfig, materialize_base_model

    out = tmp_path_factory.mktemp("smollm2") / "base"
    materialize_base_model(ModelConfig(), out)
    return out


def make_tiny_model(root: Path, seed: int, verb: str = "founded", out: Path | None = None, hidden_size: int = 64) -> Path:
    """A random tiny Qwen2-shaped model in ``out`` (default ``root/m``), its tokenizer trained on a
    200-line corpus written to ``root/corpus.jsonl`` about five fictional names. ``hidden_size`` 128 gives
    heads of 32 dimensions, the smallest vLLM's CPU attention takes."""
    import json

    from searchr2.models import ModelConfig, TinyModelConfig, materialize_base_model

    corpus = root / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(200):
            a, b = NAMES[i % 5], NAMES[(i * 3 + 1) % 5]
            f.write(json.dumps({"id": str(i), "contents": f'"{a}"\n{a} was {verb} in {1900 + i} near {b}.'}) + "\n")
    out = out or root / "m"
    materialize_base_model(ModelConfig(source="tiny", seed=seed, tiny=TinyModelConfig(hidden_size=hidden_size,
                                                                                       vocab_size=400)), out, corpus)
    return out



#: the launchers of :func:`launch_two_processes`, each with the DeepSpeed ZeRO stage its run must report
LAUNCHERS = {"ddp": 0, "deepspeed-zero2": 2, "deepspeed-zero3": 3}


def launch_two_processes(launcher: str, worker: str, *args, timeout: int = 900,
                         env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the script ``tests/<worker>`` as 2 processes on CPU: ``launcher`` is ``ddp`` (torchrun, gloo)
    or the name of a DeepSpeed config in configs/accelerate/ (``deepspeed-zero2``, ``deepspeed-zero3``),
    launched unchanged by ``accelerate launch`` but for 2 processes and fp32; ``env`` is added to their
    environment. Returns the finished process (its return code is the caller's to check)."""
    import socket

    script = [str(ROOT / "tests" / worker), *map(str, args)]
    with socket.socket() as s:                           # a free port: two launches may overlap in time
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    if launcher == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, *script]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / f"configs/accelerate/{launcher}.yaml"), "--num_processes", "2", "--mixed_precision", "no",
               "--main_process_port", port, *script]
    return subprocess.run(cmd, cwd=ROOT, env={**ENV, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def assert_killed(proc: subprocess.CompletedProcess) -> None:
    """A launch whose processes were stopped by ``distributed_cpu.die_after_checkpoints``."""
    from distributed_cpu import KILLED

    assert proc.returncode != 0 and f"exitcode  : {KILLED}" in proc.stderr + proc.stdout, proc.stderr[-4000:]


def assert_trained_alike(trained: dict, reference: dict, start: dict, tolerance: float = 0.01) -> None:
    """Two runs of the same training (state dicts ``trained`` and ``reference``, both from ``start``) end
    at the same weights: training moved them, and each tensor differs from the reference run's by at most
    ``tolerance`` of how far the reference run moved it. A relative bound, not rounding-level equality:
    AdamW divides by each gradient entry's own size, so where an entry is near zero, a different order of
    summing the processes' gradients (ZeRO-3 reduces every micro-batch) shows up at ~0.1% of the update."""
    import torch

    assert trained.keys() == reference.keys() == start.keys()
    assert any(not torch.equal(reference[k], start[k]) for k in start), "the reference run did not train"
    for k in trained:
        moved = float((reference[k] - start[k]).abs().max())
        gap = float((trained[k] - reference[k]).abs().max())
        assert gap <= tolerance * moved + 1e-7, f"{k}: differs by {gap:.3g}, the update was {moved:.3g}"

