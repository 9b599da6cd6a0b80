"""One retrieval server for every process of a node: Search-R1's ``POST /retrieve`` API over one
loaded index (docs/scale-out.md#one-retrieval-server-per-node).

    python -m searchr2.server                       # params.yaml: retrieval.method, index.*, server.*
    python -m searchr2.server --method dense --port 8001

Under ``accelerate launch`` each process that opens an index holds its own copy (a flat E5 index of
wiki-18 is about 64 GB); a node runs this server once instead and every process asks it over HTTP
(:class:`searchr2.remote.RemoteRetriever`, chosen by ``retrieval.server_url``).

The API is Search-R1's, so the clients of that family (its own rollout, verl's search tool, SkyRL,
...) work unchanged::

    POST /retrieve  {"queries": ["who wrote ..."], "topk": 3, "return_scores": true}
    ->  {"result": [[{"document": {"id": "12", "contents": "\\"Title\\"\\ntext"}, "score": 11.2}, ...], ...]}

With ``return_scores`` false (its default) each hit is the bare document. ``GET /health`` answers
503 while the index loads and 200 with what was loaded once it can serve; ``/retrieve`` answers 503
until then.

What differs from Search-R1's own server, and why (its users' reports are the brief):

* **Batching across requests.** Requests that arrive within ``server.batch_window_ms`` of the first
  waiting one (up to ``server.max_batch_queries`` queries) are searched as one batch: one encoder
  call and one FAISS search for dense, pyserini's multi-threaded ``batch_search`` for BM25. While a
  batch is searched, new requests queue and form the next one. Search-R1 answers one request at a
  time and BM25 there searches query by query.
* **Bounded.** Queries per request, ``topk``, query length and body size are limited (4xx with a
  message naming the limit and its param); a request not answered within ``server.request_timeout_s``
  gets a 504, never a hang; malformed JSON is a 400 and the server goes on; it binds 127.0.0.1 unless
  ``server.host`` says otherwise.
* **Memory.** The index is opened once, by this process: the dense index is memory-mapped where FAISS
  can (``searchr2.retrieval``), the passages are read by offset from the prepared corpus. On a GPU node
  ``server.faiss_gpu`` shards it over the GPUs with faiss-gpu; where faiss-gpu cannot be installed,
  ``server.torch_gpu`` searches a flat index with torch on the GPUs instead (same hits).
* **Quiet.** One log line per searched batch, not per query: its queries, requests and milliseconds,
  split into the retriever's stages where it times them (dense: encode, index, passages).

FastAPI and uvicorn do the HTTP; the batching (an asyncio queue drained by one task, searches run on
one worker thread, which also owns the JVM for BM25) is ours, about 60 lines, because neither offers
cross-request batching.
"""
import argparse
import asyncio
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from searchr2.corpus import format_contents
from searchr2.params import check_types


@dataclass(frozen=True)
class ServerConfig:
    """The ``server`` params section: the retrieval server's address, batching and limits."""

    host: str = "127.0.0.1"            # interface to bind; 0.0.0.0 serves other machines too (no authentication)
    port: int = 8000                   # TCP port (Search-R1's default)
    batch_window_ms: float = 5.0       # how long the first waiting request waits for others to share its batch
    max_batch_queries: int = 512       # queries searched together at most (several requests' worth)
    max_queries_per_request: int = 256  # a request with more is refused (413)
    max_topk: int = 100                # a larger topk is refused (422)
    max_query_chars: int = 2000        # a longer query is refused (422)
    max_body_bytes: int = 1_000_000    # a larger request body is refused (413)
    request_timeout_s: float = 30.0    # a request not answered by then gets a 504
    faiss_gpu: bool = False            # shard a dense index over every GPU of the node (faiss-gpu only; with
                                       # faiss-cpu, or for BM25, loading fails and /health says why)
    torch_gpu: bool = False            # search a flat dense index with torch instead, its vectors split over every
                                       # visible GPU: for nodes where faiss-gpu cannot be installed (same hits; with
                                       # no GPU, for BM25 or another index type loading fails and /health says why)

    def __post_init__(self):
        check_types(self, "server.")
        for name in ("port", "max_batch_queries", "max_queries_per_request", "max_topk", "max_query_chars",
                     "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"server.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.batch_window_ms < 0:
            raise ValueError(f"server.batch_window_ms must be >= 0, got {self.batch_window_ms!r}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"server.request_timeout_s must be > 0, got {self.request_timeout_s!r}")
        if self.faiss_gpu and self.torch_gpu:
            raise ValueError("server.faiss_gpu and server.torch_gpu are both true; choose one way to search on the GPUs")
        if self.max_queries_per_request > self.max_batch_queries:
            raise ValueError(f"server.max_queries_per_request ({self.max_queries_per_request}) must not exceed "
                             f"server.max_batch_queries ({self.max_batch_queries}): a request is searched whole")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_request(body: bytes, cfg: ServerConfig) -> tuple[list[str], int, bool]:
    """``(queries, topk, return_scores)`` of a ``/retrieve`` body, or :class:`RequestError` saying what is wrong.

    As Search-R1's server: ``queries`` is required, ``topk`` defaults to 3 and ``return_scores`` to false.
    """
    if len(body) > cfg.max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {cfg.max_body_bytes} "
                                "(server.max_body_bytes)")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"request body is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise RequestError(422, "request body must be a JSON object with a 'queries' list")
    unknown = sorted(set(payload) - {"queries", "topk", "return_scores"})
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; expected queries, topk, return_scores")
    queries = payload.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise RequestError(422, "'queries' must be a list of strings")
    if len(queries) > cfg.max_queries_per_request:
        raise RequestError(413, f"{len(queries)} queries in one request; the limit is {cfg.max_queries_per_request} "
                                "(server.max_queries_per_request)")
    for i, q in enumerate(queries):
        if len(q) > cfg.max_query_chars:
            raise RequestError(422, f"queries[{i}] has {len(q)} characters; the limit is {cfg.max_query_chars} "
                                    "(server.max_query_chars)")
    topk = payload.get("topk", 3)
    if topk is None:
        topk = 3
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= cfg.max_topk:
        raise RequestError(422, f"'topk' must be an integer from 1 to {cfg.max_topk} (server.max_topk), got {topk!r}")
    scores = payload.get("return_scores", False)
    if not isinstance(scores, bool):
        raise RequestError(422, f"'return_scores' must be true or false, got {scores!r}")
    return queries, topk, scores


def search_r1_hits(hits: list[dict], return_scores: bool) -> list:
    """Our hits (``{"id", "title", "text", "score"}``) in Search-R1's shape: documents ``{"id", "contents"}``
    with the corpus's own ``contents``, each wrapped with its score when ``return_scores``."""
    docs = [{"id": h["id"], "contents": format_contents(h["title"], h["text"])} for h in hits]
    if not return_scores:
        return docs
    return [{"document": d, "score": h["score"]} for d, h in zip(docs, hits)]


class Batcher:
    """Gathers concurrent requests into batches and searches each batch in one call, on one worker thread.

    ``search(queries, k)`` is the retriever's; it runs on the batcher's single thread (the one that
    loaded the index: pyserini's JVM is attached to it). Requests of a batch asking for different
    ``topk`` are searched once per distinct value, so every request gets exactly what a search of its
    own would return. ``log(line)`` gets one line per searched batch; ``stages()``, where set, runs on the
    search thread after each search and returns that search's milliseconds by stage (a retriever's
    ``last_timings``), summed over the batch's searches into the line.
    """

    def __init__(self, window_s: float, max_queries: int, log: Callable[[str], object] = print):
        self.window_s, self.max_queries, self.log = window_s, max_queries, log
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self.search: Callable | None = None
        self.stages: Callable[[], dict] | None = None
        self.queue: asyncio.Queue | None = None
        self.batches = 0

    async def submit(self, queries: list[str], k: int) -> list[list[dict]]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((queries, k, future))
        return await future

    async def run(self) -> None:
        """Drain the queue forever (the server's lifespan cancels it)."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size, deadline = len(batch[0][0]), loop.time() + self.window_s
            while size < self.max_queries:
                try:
                    item = self.queue.get_nowait() if loop.time() >= deadline else await asyncio.wait_for(
                        self.queue.get(), deadline - loop.time())
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if size + len(item[0]) > self.max_queries:
                    await self._search(batch)
                    batch, size, deadline = [], 0, loop.time()
                batch.append(item)
                size += len(item[0])
            await self._search(batch)

    async def _search(self, batch: list) -> None:
        live = [item for item in batch if not item[2].done()]        # a timed-out request is not searched
        if not live:
            return
        start, stages = time.perf_counter(), {}
        loop = asyncio.get_running_loop()
        for k in sorted({k for _, k, _ in live}):
            items = [item for item in live if item[1] == k]
            queries = [q for qs, _, _ in items for q in qs]
            try:
                results, spent = await loop.run_in_executor(self.worker, self._timed, queries, k)
            except Exception as e:                                   # the requests fail, the server goes on
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            for name, ms in spent.items():
                stages[name] = stages.get(name, 0.0) + ms
            at = 0
            for qs, _, future in items:
                if not future.done():
                    future.set_result(results[at:at + len(qs)])
                at += len(qs)
        self.batches += 1
        self.log(f"[server] batch {self.batches}: {sum(len(qs) for qs, _, _ in live)} queries from {len(live)} "
                 f"request(s), topk {sorted({k for _, k, _ in live})}, {1000 * (time.perf_counter() - start):.0f} ms"
                 + (f" ({', '.join(f'{name} {ms:.0f}' for name, ms in stages.items())} ms)" if stages else ""))

    def _timed(self, queries: list[str], k: int) -> tuple[list, dict]:
        results = self.search(queries, k)
        return results, (dict(self.stages() or {}) if self.stages else {})


def create_app(load: Callable[[], object], cfg: ServerConfig, log: Callable[[str], object] = print,
               about: dict | None = None):
    """The FastAPI app. ``load()`` opens the index and returns a retriever (anything with
    ``search(queries, k)``); it runs on the search thread once the app starts, while the app already
    answers (``/health`` says 503 until it returns). ``about`` (e.g. the method and index directory)
    is part of ``/health``'s detail once ready."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request     # (no postponed annotations in this module: FastAPI reads this one)
    from fastapi.responses import JSONResponse

    batcher = Batcher(cfg.batch_window_ms / 1000, cfg.max_batch_queries, log)
    state: dict = {"status": "loading", "detail": None}

    def load_index() -> None:
        try:
            start = time.perf_counter()
            retriever = load()
            batcher.search = retriever.search
            batcher.stages = lambda: getattr(retriever, "last_timings", None)
            state.update(status="ready", detail={**(about or {}), "passages": _passages(retriever),
                                                 "seconds_to_load": round(time.perf_counter() - start, 2)})
            log(f"[server] index loaded in {state['detail']['seconds_to_load']} s; ready")
        except Exception as e:                                       # /health reports it; nothing is served
            state.update(status="failed", detail=f"{type(e).__name__}: {e}")
            log(f"[server] loading the index failed: {state['detail']}")

    @asynccontextmanager
    async def lifespan(app):
        batcher.queue = asyncio.Queue()
        task = asyncio.create_task(batcher.run())
        asyncio.get_running_loop().run_in_executor(batcher.worker, load_index)
        try:
            yield
        finally:
            task.cancel()
            batcher.worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="searchr2 retrieval server", lifespan=lifespan)

    @app.get("/health")
    async def health():
        code = {"ready": 200, "loading": 503, "failed": 500}[state["status"]]
        return JSONResponse({"status": state["status"], "detail": state["detail"]}, status_code=code)

    @app.post("/retrieve")
    async def retrieve(request: Request):
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
                raise RequestError(413, f"request body is {declared} bytes; the limit is {cfg.max_body_bytes} "
                                        "(server.max_body_bytes)")
            body = await _read_capped(request, cfg.max_body_bytes)
            queries, topk, return_scores = parse_request(body, cfg)
            if state["status"] != "ready":
                raise RequestError(503, f"the index is {state['status']}; retry when GET /health answers 200")
            try:
                hits = await asyncio.wait_for(batcher.submit(queries, topk), cfg.request_timeout_s)
            except asyncio.TimeoutError:
                raise RequestError(504, f"not answered within {cfg.request_timeout_s} s (server.request_timeout_s)")
            except Exception as e:
                raise RequestError(500, f"search failed: {type(e).__name__}: {e}")
        except RequestError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        # a JSONResponse of plain lists and dicts: FastAPI's generic encoder would walk every hit again
        return JSONResponse({"result": [search_r1_hits(h, return_scores) for h in hits]})

    app.state.batcher, app.state.status = batcher, state
    return app


async def _read_capped(request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit`` bytes (a chunked body declares no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds {limit} bytes (server.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _passages(retriever) -> int | None:
    docs = getattr(retriever, "docs", None)
    return len(docs) if docs is not None else None


def shard_on_gpus(retriever):
    """``retriever`` (dense) with its FAISS index sharded over all visible GPUs (``server.faiss_gpu``)."""
    import faiss

    if not hasattr(retriever, "index"):
        raise ValueError("server.faiss_gpu applies to a dense index only; this server serves BM25")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not hasattr(faiss, "index_cpu_to_all_gpus") or gpus < 1:
        raise ValueError("server.faiss_gpu is true, but this FAISS has no GPU support or sees no GPU "
                         f"(faiss {faiss.__version__}, {gpus} GPU(s)); install faiss-gpu or set server.faiss_gpu: false")
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    retriever.index = faiss.index_cpu_to_all_gpus(retriever.index, co=options)
    return retriever


def search_on_torch_gpus(retriever):
    """``retriever`` (dense, flat) with its vectors split over all visible GPUs and searched with torch
    (``server.torch_gpu``; :class:`searchr2.retrieval.TorchFlatIndex`)."""
    import torch

    from searchr2.retrieval import TorchFlatIndex

    if not hasattr(retriever, "index"):
        raise ValueError("server.torch_gpu applies to a dense index only; this server serves BM25")
    gpus = torch.cuda.device_count()
    if gpus < 1:
        raise ValueError(f"server.torch_gpu is true, but torch sees no GPU (torch {torch.__version__}, CUDA "
                         f"{torch.version.cuda}); set server.torch_gpu: false")
    retriever.index = TorchFlatIndex(retriever.index, [f"cuda:{g}" for g in range(gpus)])
    return retriever


def place_index(retriever, cfg: ServerConfig):
    """``retriever`` with its index where ``cfg`` puts it: as loaded, on the GPUs with faiss-gpu, or with torch."""
    if cfg.faiss_gpu:
        return shard_on_gpus(retriever)
    return search_on_torch_gpus(retriever) if cfg.torch_gpu else retriever


def serve(app, cfg: ServerConfig) -> None:
    """Run ``app`` with uvicorn on ``cfg.host:cfg.port`` until interrupted."""
    import uvicorn

    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that is free now (the OS picks it), for a server whose URL must be known first."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """``app`` served by uvicorn on a thread of this process (tests and benchmarks); ``url`` once started."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        port = port or free_port(host)
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m searchr2.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument("--method", choices=("bm25", "dense"), help="index to serve (default: retrieval.method)")
    parser.add_argument("--index-dir", type=Path, default=None, help="directory holding bm25/ and dense/ "
                        "(default: data/index)")
    parser.add_argument("--host", help="interface to bind (default: server.host)")
    parser.add_argument("--port", type=int, help="port (default: server.port)")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from searchr2.params import load_params
    from searchr2.paths import INDEX_DIR
    from searchr2.retrieval import load_retriever

    p = load_params(args.params)
    cfg = replace(p.server, **{k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None})
    method = args.method or p.retrieval.method
    index_dir = args.index_dir or INDEX_DIR
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"[server] serving the {method} index of {index_dir} on http://{cfg.host}:{cfg.port} "
        f"(POST /retrieve, GET /health)")
    def load():
        return place_index(load_retriever(method, index_dir, p.index), cfg)

    serve(create_app(load, cfg, log, about={"method": method, "index_dir": str(index_dir),
                                            "faiss_gpu": cfg.faiss_gpu, "torch_gpu": cfg.torch_gpu}), cfg)


if __name__ == "__main__":
    main()
