"""FAISS flat inner-product search by OpenMP threads and wait policy: how long one search of 8, 64 and 512
queries takes over random vectors (by default 200,000 x 384, the dense server benchmark's index size).

    python benchmarks/bench_faiss_flat.py --json benchmarks/results/faiss-flat.json

Each setting runs in a process of its own, since OpenMP reads ``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY``
once, at start. Settings: 16, 8, 4 and 2 threads with the passive wait policy (what ``searchr2.encoder``
sets unless told otherwise), 16 threads with the default (spinning) one, 16 threads with torch loaded
beside FAISS (as in the server), and 16 and 8 threads with the index memory-mapped from a file (as
``searchr2.retrieval.DenseRetriever`` opens it). BLAS is used from 16 x dim query values on, as
``searchr2.retrieval`` sets it. Each search is timed three times after one warm-up; the table gives the
mean. The last line, ``BEST <threads> <policy> <kernel>``, names the plain setting (no torch, no mapping)
that would serve the server's load fastest: one batch of 512 plus 64 requests of 8 (the one-at-a-time
server); the kernel is ``-`` unless a forced one (below) wins.

Every row also says which BLAS FAISS runs on and the kernel it picked for this processor (``blas``,
from threadpoolctl: faiss-cpu's wheel brings its own OpenBLAS, which chooses a kernel by CPUID at start;
an old OpenBLAS on a newer processor may pick a slower one). ``--coretypes Haswell SkylakeX ...`` adds
rows at ``--coretype-threads`` threads with ``OPENBLAS_CORETYPE`` forcing each kernel, beside the
detected one at the same number of threads (a name this OpenBLAS does not know, or an empty one, gives
Prescott; the row's ``blas`` says what ran)::

    python benchmarks/bench_faiss_flat.py --json faiss-flat.json --coretypes Zen Haswell SkylakeX Prescott

``--torch-devices cpu cuda`` adds a row per torch device: the same index searched by
``searchr2.retrieval.TorchFlatIndex`` (``server.torch_gpu``: a matrix product and a top-k per chunk of
rows), its vectors on that device, queries from and answers to the host as the server has them. Such a
row gives torch's BLAS (``torch_blas``, from its build configuration) and, per batch, the share of the
queries whose ids equal FAISS's (``same_ids_<n>``; equal scores may be ordered differently).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = [("16", "PASSIVE", ""), ("16", "", ""), ("8", "PASSIVE", ""), ("4", "PASSIVE", ""), ("2", "PASSIVE", ""),
            ("16", "PASSIVE", "torch"), ("16", "PASSIVE", "mmap"), ("8", "PASSIVE", "mmap")]
BATCHES = (8, 64, 512)


def one(extra: str, passages: int, dim: int, scratch: Path, blas_threshold: int) -> dict:
    """Time one setting in this process (the environment already set)."""
    if extra.startswith("torch"):
        import torch
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import faiss
    import numpy as np

    rng = np.random.default_rng(0)
    index = faiss.IndexFlatIP(dim)
    index.add(rng.standard_normal((passages, dim), dtype=np.float32))
    if extra == "mmap":
        faiss.write_index(index, str(scratch / "flat.index"))
        index = faiss.read_index(str(scratch / "flat.index"), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    faiss.cvar.distance_compute_blas_threshold = blas_threshold
    out = {"omp_threads": faiss.omp_get_max_threads(), "blas": faiss_blas()}
    reference = None
    if extra.startswith("torch:"):                   # searchr2 loads after FAISS here, its wait policy is set
        import re

        from searchr2.retrieval import TorchFlatIndex

        reference, index = index, TorchFlatIndex(index, [extra.partition(":")[2]])
        found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
        out["torch_blas"] = found.group(1) if found else None
    for nq in BATCHES:
        queries = rng.standard_normal((nq, dim), dtype=np.float32)
        index.search(queries, 3)
        start, reps = time.perf_counter(), 3
        for _ in range(reps):
            index.search(queries, 3)
        out[f"ms_{nq}"] = round(1000 * (time.perf_counter() - start) / reps, 1)
        if reference is not None:
            out[f"same_ids_{nq}"] = float((index.search(queries, 3)[1] == reference.search(queries, 3)[1])
                                          .all(axis=1).mean())
    return out


def faiss_blas() -> list[dict]:
    """The BLAS libraries loaded once FAISS is (threadpoolctl's view): FAISS's own first, each with its
    implementation, version, the kernel it picked (``architecture``) and its threading layer."""
    from threadpoolctl import threadpool_info

    keep = ("internal_api", "version", "architecture", "threading_layer", "filepath")
    found = [{k: lib.get(k) for k in keep} for lib in threadpool_info() if lib["user_api"] == "blas"]
    found.sort(key=lambda lib: "faiss" not in lib["filepath"])
    for lib in found:                                   # e.g. faiss_cpu.libs/libopenblaso-r0-d77a1985.3.15.so
        lib["filepath"] = str(Path(*Path(lib["filepath"]).parts[-2:]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="where the rows go (a JSON list)")
    parser.add_argument("--passages", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--coretypes", nargs="+", default=[], metavar="CORE",
                        help="OpenBLAS kernels to force (OPENBLAS_CORETYPE), each in a row of its own")
    parser.add_argument("--coretype-threads", type=int, default=os.cpu_count(),
                        help="OpenMP threads of the --coretypes rows (default: the cores of this machine)")
    parser.add_argument("--torch-devices", nargs="+", default=[], metavar="DEVICE",
                        help="torch devices (cpu, cuda) to search the same index on with TorchFlatIndex, a row each")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--blas-threshold", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:      # searchr2 is not imported here: it would set OMP_WAIT_POLICY before FAISS loads
        print(json.dumps(one(args.worker, args.passages, args.dim, args.scratch, args.blas_threshold)))
        return
    scratch = Path(tempfile.mkdtemp(prefix="faiss-flat-"))      # the memory-mapped variants' index file
    try:
        rows = measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.json.write_text(json.dumps(rows, indent=1))
    plain = [r for r in rows if not r["extra"] and "ms_512" in r]
    best = min(plain, key=lambda r: r["ms_512"] + r["ms_8"] * 64)
    print(f"BEST {best['threads']} {best['wait']} {best['coretype'] or '-'}")


def measure(args, scratch: Path) -> list[dict]:
    """One row per setting, each timed in a child process."""
    from searchr2.retrieval import BLAS_THRESHOLD      # what DenseRetriever sets

    settings = [(threads, wait, extra, "") for threads, wait, extra in VARIANTS]
    if args.coretypes:
        threads = str(args.coretype_threads)
        if (threads, "PASSIVE", "") not in VARIANTS:              # the detected kernel at the same threads
            settings.append((threads, "PASSIVE", "", ""))
        settings += [(threads, "PASSIVE", "", core) for core in args.coretypes]
    settings += [(str(args.coretype_threads), "PASSIVE", f"torch:{device}", "") for device in args.torch_devices]
    rows = []
    for threads, wait, extra, core in settings:
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        for name in ("OMP_WAIT_POLICY", "OPENBLAS_CORETYPE"):
            env.pop(name, None)
        if wait:
            env["OMP_WAIT_POLICY"] = wait
        if core:
            env["OPENBLAS_CORETYPE"] = core
        proc = subprocess.run([sys.executable, __file__, "--json", str(args.json), "--passages", str(args.passages),
                               "--dim", str(args.dim), "--scratch", str(scratch),
                               "--blas-threshold", str(BLAS_THRESHOLD), "--worker", extra],
                              env=env, capture_output=True, text=True, timeout=300)
        row = {"threads": threads, "wait": wait or "default", "extra": extra, "coretype": core,
               **(json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-300:]})}
        kernel = next((lib["architecture"] for lib in row.get("blas", []) if "faiss" in lib["filepath"]), None)
        if extra.startswith("torch:"):                 # not FAISS's BLAS: torch's, and how many ids FAISS's
            kernel = f"torch's {row.get('torch_blas')}, same ids " + "/".join(str(row.get(f"same_ids_{nq}"))
                                                                                 for nq in BATCHES)
        print(f"{threads:>2} threads, wait {row['wait']}, {extra or 'plain'}, kernel {kernel}"
              f"{f' (forced {core})' if core else ''}: " + ", ".join(f"{nq} queries {row.get(f'ms_{nq}')} ms"
                                                                   for nq in BATCHES) + (" ERROR" if "error" in row else ""),
              flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
