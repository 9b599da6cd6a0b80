"""Benchmark the retrieval server under load: in-process search, this server, and a server that answers
one request at a time searching query by query (Search-R1's loop), side by side, in one run.

    python benchmarks/bench_index.py --world-entities 71000 --workdir /work/w200k --name world-200k-for-server \\
        --no-recall --n-queries 256 --dense '{"max_length": 32}'              # once: ~201k passages, both indexes
    python benchmarks/bench_server.py --workdir /work/w200k --name server-200k

For each method (BM25, dense MiniLM flat) and each number of concurrent clients (``--clients``), every
client is a thread that sends ``--requests`` requests of ``--batch`` queries (the world's questions,
each client its own) one after another and waits for each answer. Measured: queries/s over the whole
run (all queries / wall time from the first request to the last answer) and the p50 / p99 latency of
one request. Three ways of answering:

* ``in_process``: the clients call ``retriever.search`` of one retriever in this process, one call at a
  time (a lock: one index shared by the process's threads), no HTTP;
* ``server``: ``python -m searchr2.server``'s app (:func:`searchr2.server.create_app`, batching across
  requests, the params' ``server`` section), in a process of its own;
* ``one_at_a_time``: a re-creation of Search-R1's ``retrieval_server.py`` loop (not its code, which
  needs its own environment): a FastAPI endpoint that serves one request at a time; BM25 searches
  the request's queries one by one, dense encodes and searches the request's queries as one batch (as
  Search-R1's dense retriever does within a request). Same index, same answers, in a process of its own.

With ``--torch-gpu`` all three search a dense flat index with torch on the GPUs (``server.torch_gpu``),
where Search-R1's server would use faiss-gpu (its ``--faiss_gpu``): the same search on the same device.

Each server is started by this script (``serve`` sub-command), its resident memory (``VmRSS``) read
once its index is loaded and again after the load. The batching server's one line per searched batch goes
to ``<workdir>/<name>-<method>-batches.log``; for each load the results give its batches (``server_batches``:
how many, queries per batch, the milliseconds each spent in the retriever, and ``busy``, the share of the
run's wall time the search thread was searching: near 1, the search bounds the throughput; well below,
the HTTP side and the clients do). Results: ``benchmarks/results/<name>.json`` and
``.md``, with ``lscpu``'s model and flags.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import loadavg_fields, lscpu, markdown_head, write_result  # noqa: E402

MODES = ("in_process", "server", "one_at_a_time")
BATCH_LINE = re.compile(r"\[server\] batch \d+: (\d+) queries from (\d+) request\(s\), topk \[[^]]*\], "
                        r"(\d+) ms(?: \((.*) ms\))?$")


def batch_stats(lines: list[str], wall_s: float) -> dict:
    """What the batching server's log ``lines`` of one load run say: batches, queries per batch, search ms
    (and its mean by stage, ``stage_ms_mean``, where the lines give the retriever's stages)."""
    found = [m.groups() for m in map(BATCH_LINE.match, lines) if m]
    if not found:
        return {"batches": 0}
    queries, requests, ms = ([int(g[i]) for g in found] for i in range(3))
    stats = {"batches": len(found), "queries_per_batch_mean": round(statistics.mean(queries), 1),
             "queries_per_batch_max": max(queries), "requests_per_batch_mean": round(statistics.mean(requests), 1),
             "search_ms_mean": round(statistics.mean(ms), 1), "search_ms_max": max(ms),
             "busy": round(sum(ms) / 1000 / wall_s, 2) if wall_s > 0 else None}
    stages: dict[str, list[float]] = {}
    for g in found:
        for part in (g[3].split(", ") if g[3] else []):
            name, value = part.rsplit(" ", 1)
            stages.setdefault(name, []).append(float(value))
    if stages:
        stats["stage_ms_mean"] = {name: round(statistics.mean(v), 1) for name, v in stages.items()}
    return stats


def open_index(workdir: Path, method: str, device: str | None = None, torch_gpu: bool = False):
    """The retriever of ``workdir``'s ``method`` index, dense with the settings it was built with (and
    the query encoder on ``device`` where one is given; with ``torch_gpu`` its flat index searched by torch
    on the GPUs, as ``server.torch_gpu`` does)."""
    from searchr2.params import load_params
    from searchr2.retrieval import load_retriever

    p = load_params(ROOT / "params.yaml")
    meta = json.loads((workdir / "index" / method / "meta.json").read_text())
    index_cfg = p.index
    if method == "dense":                               # the settings the index was built with
        from dataclasses import fields, replace

        built = dict(meta.get("config", {}), **({"device": device} if device else {}))
        index_cfg = replace(p.index, dense=replace(p.index.dense, **{f.name: built[f.name]
                                                                     for f in fields(p.index.dense) if f.name in built}))
    retriever = load_retriever(method, workdir / "index", index_cfg)
    if torch_gpu:
        from searchr2.server import search_on_torch_gpus

        retriever = search_on_torch_gpus(retriever)
    return retriever, p


def one_at_a_time_app(load, method: str):
    """Search-R1's serving loop, re-created: one request at a time, BM25 query by query."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from searchr2.server import search_r1_hits

    app, lock, state = FastAPI(), threading.Lock(), {}
    state["retriever"] = load()

    @app.get("/health")
    def health():
        return {"status": "ready", "detail": {"method": method}}

    @app.post("/retrieve")
    def retrieve(payload: dict):
        queries, k, scores = payload["queries"], payload.get("topk", 3), payload.get("return_scores", False)
        with lock:
            if method == "bm25":
                hits = [state["retriever"].search([q], k)[0] for q in queries]
            else:
                hits = state["retriever"].search(queries, k)
        return {"result": [search_r1_hits(h, scores) for h in hits]}

    return app


def serve(args) -> None:
    """The ``serve`` sub-command: one server (``--mode``) on ``--port``, until killed."""
    import uvicorn

    from searchr2.server import create_app

    retriever, p = open_index(args.workdir, args.method, args.device, args.torch_gpu)
    if args.mode == "server":
        log = lambda line: None                                     # noqa: E731
        if args.batch_log:
            out = open(args.batch_log, "a", buffering=1)            # a line each, flushed: read during the run
            log = lambda line: out.write(line + "\n")               # noqa: E731
        app = create_app(lambda: retriever, p.server, log, about={"method": args.method})
    else:
        app = one_at_a_time_app(lambda: retriever, args.method)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def run_load(ask, queries: list[str], clients: int, requests: int, batch: int) -> dict:
    """``clients`` threads, each sending ``requests`` batches of ``batch`` queries; returns the figures."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        mine = [queries[(c * requests * batch + i) % len(queries)] for i in range(requests * batch)]
        barrier.wait()
        for r in range(requests):
            start = time.perf_counter()
            try:
                ask(mine[r * batch:(r + 1) * batch])
            except Exception as e:                 # recorded, not raised: the figure says how many failed
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_error": errors[:1],
            "queries": len(latencies) * batch, "seconds": round(wall, 3),
            "queries_per_s": round(len(latencies) * batch / wall, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1) if ordered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("serve", help="(internal) run one server until killed")
    worker.add_argument("--mode", choices=MODES[1:], required=True)
    worker.add_argument("--method", choices=("bm25", "dense"), required=True)
    worker.add_argument("--workdir", type=Path, required=True)
    worker.add_argument("--port", type=int, required=True)
    worker.add_argument("--threads", type=int, default=2)
    worker.add_argument("--device")
    worker.add_argument("--batch-log", type=Path, help="append the batching server's per-batch lines here")
    worker.add_argument("--torch-gpu", action="store_true")
    parser.add_argument("--workdir", type=Path, help="bench_index.py's --workdir: corpus.jsonl, index/, queries.json")
    parser.add_argument("--methods", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--batch", type=int, default=8, help="queries per request")
    parser.add_argument("--requests", type=int, default=10, help="requests per client (at least 40 in all)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each process")
    parser.add_argument("--device", help="torch device of the dense query encoder (cpu, cuda); default: the "
                        "one the index was built with")
    parser.add_argument("--torch-gpu", action="store_true", help="dense: search the flat index with torch on the "
                        "GPUs (server.torch_gpu), in all three ways of answering; default: FAISS as loaded")
    parser.add_argument("--name", default="server", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args()
    if args.command == "serve":
        import torch

        torch.set_num_threads(args.threads)
        serve(args)
        return
    if args.workdir is None:
        parser.error("--workdir is required")

    import requests
    import torch

    from searchr2.remote import RemoteRetriever
    from searchr2.retrieval import faiss_blas_kernel
    from searchr2.server import free_port

    torch.set_num_threads(args.threads)
    queries = json.loads((args.workdir / "queries.json").read_text())
    load_before = os.getloadavg()
    result: dict = {"name": args.name, "workdir": str(args.workdir), "batch": args.batch, "k": args.k,
                    "threads": args.threads, "torch": torch.__version__, "cpu": lscpu(), "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    # the kernel of FAISS's OpenBLAS (the servers inherit this environment, OPENBLAS_CORETYPE too)
                    "faiss_blas_kernel": faiss_blas_kernel(), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
                    "dense_search": "torch on the GPUs" if args.torch_gpu else "FAISS", "methods": {}}
    for method in args.methods:
        runs: dict = {mode: [] for mode in MODES}
        memory: dict = {}
        torch_gpu = args.torch_gpu and method == "dense"          # BM25 has no vectors to put on the GPUs
        local, _ = open_index(args.workdir, method, args.device, torch_gpu)
        lock = threading.Lock()

        def in_process(qs, local=local, lock=lock):
            with lock:
                return local.search(qs, args.k)

        for clients in args.clients:
            n = max(args.requests, -(-40 // clients))
            runs["in_process"].append(run_load(in_process, queries, clients, n, args.batch))
            print(f"[bench] {method} in_process {runs['in_process'][-1]}", file=sys.stderr, flush=True)
        del local
        batch_log = args.workdir / f"{args.name}-{method}-batches.log"
        batch_log.write_text("")
        for mode in MODES[1:]:
            port = free_port()
            child = subprocess.Popen([sys.executable, __file__, "serve", "--mode", mode, "--method", method,
                                      "--workdir", str(args.workdir), "--port", str(port),
                                      "--threads", str(args.threads), "--batch-log", str(batch_log)]
                                     + (["--device", args.device] if args.device else [])
                                     + (["--torch-gpu"] if torch_gpu else []), cwd=ROOT)
            try:
                url = f"http://127.0.0.1:{port}"
                start = time.perf_counter()
                RemoteRetriever(url).wait_ready(timeout_s=600, poll_s=0.2)
                memory[mode] = {"seconds_to_ready": round(time.perf_counter() - start, 1), "rss_ready_mb": rss_mb(child.pid)}
                session_local = threading.local()

                def ask(qs, url=url):
                    session = getattr(session_local, "s", None) or requests.Session()
                    session_local.s = session
                    answer = session.post(f"{url}/retrieve", json={"queries": qs, "topk": args.k,
                                                                    "return_scores": True}, timeout=600)
                    answer.raise_for_status()
                    return answer.json()

                for clients in args.clients:
                    n = max(args.requests, -(-40 // clients))
                    seen = len(batch_log.read_text().splitlines())
                    runs[mode].append(run_load(ask, queries, clients, n, args.batch))
                    if mode == "server":          # its log line is written before the batch's answers go out
                        runs[mode][-1]["server_batches"] = batch_stats(batch_log.read_text().splitlines()[seen:],
                                                                       runs[mode][-1]["seconds"])
                    print(f"[bench] {method} {mode} {runs[mode][-1]}", file=sys.stderr, flush=True)
                memory[mode]["rss_after_mb"] = rss_mb(child.pid)
            finally:
                child.terminate()
                child.wait(timeout=60)
        result["methods"][method] = {"runs": runs, "server_memory": memory}
    result.update(loadavg_fields(load_before))
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    write_result(out, result)
    md = markdown_head(args.name, result, torch.__version__, args.threads,
                       (f"GPU {result['gpu']}, dense query encoder on {args.device or 'the build device'}; "
                        if result["gpu"] else "") + f"dense search: {result['dense_search']}; "
                       + f"FAISS's OpenBLAS kernel {result['faiss_blas_kernel']}"
                       + (f" (OPENBLAS_CORETYPE={result['openblas_coretype']})" if result["openblas_coretype"] else ""))
    md += [f"Requests of {args.batch} queries, top-{args.k}; queries/s over the whole run, latency of one request.", "",
           "| method | clients | in-process q/s | server q/s | one-at-a-time q/s | server / one-at-a-time | "
           "server p50 / p99 ms | one-at-a-time p50 / p99 ms | in-process p50 / p99 ms |",
           "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for method, data in result["methods"].items():
        for a, b, c in zip(data["runs"]["in_process"], data["runs"]["server"], data["runs"]["one_at_a_time"]):
            md.append(f"| {method} | {a['clients']} | {a['queries_per_s']} | {b['queries_per_s']} | {c['queries_per_s']} | "
                      f"{b['queries_per_s'] / c['queries_per_s']:.2f}x | {b['p50_ms']} / {b['p99_ms']} | "
                      f"{c['p50_ms']} / {c['p99_ms']} | {a['p50_ms']} / {a['p99_ms']} |")
    md += ["", "The batching server's batches (its log): queries per batch, milliseconds each spent in the retriever, "
           "and the share of the run's wall time spent searching.", "",
           "| method | clients | batches | queries per batch (mean / max) | search ms per batch (mean / max) | "
           "mean ms by stage | busy |",
           "|---|---:|---:|---|---|---|---:|"]
    for method, data in result["methods"].items():
        for run in data["runs"]["server"]:
            b = run.get("server_batches", {})
            if b.get("batches"):
                by_stage = ", ".join(f"{name} {ms}" for name, ms in b.get("stage_ms_mean", {}).items())
                md.append(f"| {method} | {run['clients']} | {b['batches']} | {b['queries_per_batch_mean']} / "
                          f"{b['queries_per_batch_max']} | {b['search_ms_mean']} / {b['search_ms_max']} | "
                          f"{by_stage or '-'} | {b['busy']} |")
    md += ["", "| method | server | seconds to ready | RSS ready (MB) | RSS after the load (MB) |", "|---|---|---:|---:|---:|"]
    for method, data in result["methods"].items():
        for mode, m in data["server_memory"].items():
            md.append(f"| {method} | {mode} | {m['seconds_to_ready']} | {m['rss_ready_mb']} | {m.get('rss_after_mb')} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
