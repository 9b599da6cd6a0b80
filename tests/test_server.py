"""The retrieval server (searchr2.server) and its client (searchr2.remote), on loopback.

Real uvicorn servers on free ports of 127.0.0.1, real HTTP (requests), Search-R1's payloads. Most
tests serve a small scripted retriever, so that loading, batching and failures are under the test's
control; one serves the real BM25 and dense indexes of tests/test_retrieval.py and compares every hit
with in-process search.
"""
import asyncio
import json
import re
import threading
import time
from dataclasses import replace

import pytest
import requests

from searchr2.remote import RemoteRetriever, RetrievalServerError
from searchr2.server import BackgroundServer, Batcher, RequestError, ServerConfig, create_app, parse_request
from tests.test_retrieval import corpus, index_dir  # noqa: F401 (fixtures: the real indexes)

CFG = ServerConfig(batch_window_ms=50.0, max_batch_queries=64, max_queries_per_request=16, max_topk=10,
                   max_query_chars=100, max_body_bytes=4000, request_timeout_s=5.0)


class Scripted:
    """A retriever whose hits are made from the query; records each batch it searched (size, k)."""

    def __init__(self, delay_s: float = 0.0):
        self.calls: list[tuple[int, int]] = []
        self.delay_s = delay_s
        self.docs = [None] * 7

    def search(self, queries, k):
        self.calls.append((len(queries), k))
        time.sleep(self.delay_s)
        return [[{"id": f"{q}-{i}", "title": f"T {q}", "text": f"about {q} #{i}", "score": float(k - i)}
                 for i in range(k)] for q in queries]


def serve(retriever=None, cfg=CFG, load=None, lines=None):
    log = (lines.append if lines is not None else (lambda line: None))
    return BackgroundServer(create_app(load or (lambda: retriever), cfg, log))


def wait_ready(url, timeout=10.0):
    deadline = time.monotonic() + timeout
    while requests.get(f"{url}/health").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.02)


def post(url, payload, **kw):
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return requests.post(f"{url}/retrieve", data=data, headers={"content-type": "application/json"}, timeout=10, **kw)


def test_search_r1_payloads_get_search_r1_answers_with_and_without_scores():
    with serve(Scripted()) as server:
        wait_ready(server.url)
        # Search-R1's rollout sends exactly this
        with_scores = post(server.url, {"queries": ["alpha", "beta"], "topk": 2, "return_scores": True})
        assert with_scores.status_code == 200
        result = with_scores.json()["result"]
        assert [[h["document"]["id"] for h in r] for r in result] == [["alpha-0", "alpha-1"], ["beta-0", "beta-1"]]
        assert result[0][0] == {"document": {"id": "alpha-0", "contents": '"T alpha"\nabout alpha #0'}, "score": 2.0}
        bare = post(server.url, {"queries": ["alpha"], "topk": 1}).json()["result"]     # return_scores defaults to false
        assert bare == [[{"id": "alpha-0", "contents": '"T alpha"\nabout alpha #0'}]]
        assert len(post(server.url, {"queries": ["alpha"]}).json()["result"][0]) == 3   # topk defaults to 3


def test_the_client_gives_back_what_the_retriever_returned():
    retriever = Scripted()
    with serve(retriever) as server:
        client = RemoteRetriever(server.url)
        client.wait_ready(timeout_s=10)
        assert client.search(["alpha", "beta"], 2) == retriever.search(["alpha", "beta"], 2)
        assert client.search([], 2) == []


def test_concurrent_requests_are_searched_together():
    retriever = Scripted(delay_s=0.05)
    lines = []
    with serve(retriever, lines=lines) as server:
        wait_ready(server.url)
        answers = {}

        def ask(i):
            answers[i] = post(server.url, {"queries": [f"q{i}a", f"q{i}b"], "topk": 2, "return_scores": True}).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, body in answers.items():                                # each request got its own queries' hits
        assert [r[0]["document"]["id"] for r in body["result"]] == [f"q{i}a-0", f"q{i}b-0"]
    assert sum(n for n, _ in retriever.calls) == 24
    assert len(retriever.calls) < 12 and max(n for n, _ in retriever.calls) >= 4   # batches, not one per request
    assert len([line for line in lines if line.startswith("[server] batch")]) == len(retriever.calls)


class Timed(Scripted):
    """A scripted retriever that, like the real ones, keeps its last search's stages (ms)."""

    def search(self, queries, k):
        self.last_timings = {"encode": 1.0 * k, "index": 10.0}
        return super().search(queries, k)


def test_the_batch_line_gives_the_retrievers_stages_summed_over_its_searches():
    retriever, lines = Timed(), []

    async def go():
        batcher = Batcher(window_s=0.05, max_queries=64, log=lines.append)
        batcher.queue, batcher.search = asyncio.Queue(), retriever.search
        batcher.stages = lambda: retriever.last_timings
        runner = asyncio.create_task(batcher.run())
        await asyncio.gather(batcher.submit(["x"], 1), batcher.submit(["y", "z"], 2))   # one batch, two searches
        runner.cancel()

    asyncio.run(go())
    assert re.fullmatch(r"\[server\] batch 1: 3 queries from 2 request\(s\), topk \[1, 2\], \d+ ms "
                        r"\(encode 3, index 20 ms\)", lines[0]), lines


def test_the_app_logs_its_retrievers_stages_and_the_plain_line_without_them():
    for retriever, tail in ((Timed(), " ms (encode 1, index 10 ms)"), (Scripted(), " ms")):
        lines = []
        with serve(retriever, lines=lines) as server:
            wait_ready(server.url)
            assert post(server.url, {"queries": ["x"], "topk": 1}).status_code == 200
        batch = [line for line in lines if line.startswith("[server] batch")]
        assert len(batch) == 1 and batch[0].endswith(tail) and batch[0].endswith("ms)") == (tail != " ms"), batch


def test_requests_with_different_topk_in_one_batch_each_get_their_own_k():
    retriever = Scripted(delay_s=0.05)
    with serve(retriever) as server:
        wait_ready(server.url)
        out = {}

        def ask(k):
            out[k] = post(server.url, {"queries": ["x"], "topk": k}).json()["result"][0]

        threads = [threading.Thread(target=ask, args=(k,)) for k in (1, 2, 3, 1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert {k: len(hits) for k, hits in out.items()} == {1: 1, 2: 2, 3: 3}


def test_a_batch_never_exceeds_its_limit():
    retriever = Scripted(delay_s=0.05)
    cfg = replace(CFG, max_batch_queries=16, max_queries_per_request=16)
    with serve(retriever, cfg) as server:
        wait_ready(server.url)
        threads = [threading.Thread(target=post, args=(server.url, {"queries": [f"q{i}"] * 10})) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(n for n, _ in retriever.calls) == 60 and max(n for n, _ in retriever.calls) <= 16


@pytest.mark.parametrize("payload, status, says", [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 422, "JSON object"),
    ({"queries": "one string"}, 422, "list of strings"),
    ({"queries": [1, 2]}, 422, "list of strings"),
    ({"queries": ["a"], "topk": 0}, 422, "server.max_topk"),
    ({"queries": ["a"], "topk": 11}, 422, "server.max_topk"),
    ({"queries": ["a"], "topk": "3"}, 422, "'topk' must be an integer"),
    ({"queries": ["a"], "return_scores": "yes"}, 422, "'return_scores'"),
    ({"queries": ["a"], "top_k": 3}, 422, "unknown field(s) ['top_k']"),
    ({"queries": ["a"] * 17}, 413, "server.max_queries_per_request"),
    ({"queries": ["a" * 101]}, 422, "server.max_query_chars"),
    (b'{"queries": ["a"]' + b" " * 5000 + b"}", 413, "server.max_body_bytes"),
])
def test_every_limit_and_malformed_body_is_a_4xx_with_a_message_and_the_server_goes_on(payload, status, says):
    retriever = Scripted()
    with serve(retriever) as server:
        wait_ready(server.url)
        refused = post(server.url, payload)
        assert refused.status_code == status and says in refused.json()["error"], refused.text
        assert retriever.calls == []
        assert post(server.url, {"queries": ["fine"], "topk": 1}).status_code == 200


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams():
    with serve(Scripted()) as server:
        wait_ready(server.url)

        def chunks():
            yield b'{"queries": ["'
            for _ in range(10):
                yield b"a" * 500
            yield b'"]}'

        refused = requests.post(f"{server.url}/retrieve", data=chunks(), timeout=10)
        assert refused.status_code == 413 and "server.max_body_bytes" in refused.json()["error"]


def test_health_and_retrieve_say_503_until_the_index_is_loaded():
    release = threading.Event()

    def slow_load():
        release.wait(10)
        return Scripted()

    with serve(load=slow_load) as server:
        health = requests.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        early = post(server.url, {"queries": ["a"]})
        assert early.status_code == 503 and "GET /health" in early.json()["error"]
        assert not RemoteRetriever(server.url).ready()
        release.set()
        RemoteRetriever(server.url).wait_ready(timeout_s=10, poll_s=0.02)
        assert requests.get(f"{server.url}/health").json()["detail"]["passages"] == 7
        assert post(server.url, {"queries": ["a"]}).status_code == 200


def test_an_index_that_fails_to_load_is_reported_not_served():
    def broken():
        raise FileNotFoundError("bm25 index data/index/bm25 does not exist")

    with serve(load=broken) as server:
        deadline = time.monotonic() + 10
        while (health := requests.get(f"{server.url}/health")).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert health.status_code == 500 and "does not exist" in health.json()["detail"]
        assert post(server.url, {"queries": ["a"]}).status_code == 503


def test_a_request_that_cannot_be_served_in_time_gets_a_504_not_a_hang():
    with serve(Scripted(delay_s=1.0), replace(CFG, request_timeout_s=0.2)) as server:
        wait_ready(server.url)
        start = time.monotonic()
        late = post(server.url, {"queries": ["a"]})
        assert late.status_code == 504 and "server.request_timeout_s" in late.json()["error"]
        assert time.monotonic() - start < 0.9


def test_a_failing_search_is_a_500_for_its_requests_and_the_server_goes_on():
    class Flaky(Scripted):
        def search(self, queries, k):
            if "boom" in queries:
                raise RuntimeError("index read error")
            return super().search(queries, k)

    with serve(Flaky(), replace(CFG, batch_window_ms=0.0)) as server:
        wait_ready(server.url)
        failed = post(server.url, {"queries": ["boom"]})
        assert failed.status_code == 500 and "index read error" in failed.json()["error"]
        assert post(server.url, {"queries": ["fine"]}).status_code == 200


def test_the_client_retries_a_server_that_went_away_then_names_the_url(monkeypatch):
    with serve(Scripted()) as server:
        client = RemoteRetriever(server.url, timeout_s=2, retries=2, backoff_s=0.05)
        client.wait_ready(timeout_s=10, poll_s=0.02)
        assert client.search(["a"], 1)
    slept = []
    monkeypatch.setattr("searchr2.remote.time.sleep", slept.append)
    with pytest.raises(RetrievalServerError, match=rf"retrieval server {server.url} failed 3 time\(s\); "
                                                   r"last: cannot connect .*searchr2.server"):
        client.search(["a"], 1)
    assert slept == [0.05, 0.1]                                     # bounded retries, doubling back-off


def test_the_client_does_not_retry_a_refused_request():
    retriever = Scripted()
    with serve(retriever) as server:
        client = RemoteRetriever(server.url, retries=3, backoff_s=5.0)
        client.wait_ready(timeout_s=10, poll_s=0.02)
        start = time.monotonic()
        with pytest.raises(RetrievalServerError, match=r"refused the request \(HTTP 422\).*server.max_topk"):
            client.search(["a"], 50)
        assert time.monotonic() - start < 2


def test_bad_server_settings_are_refused():
    with pytest.raises(ValueError, match="server.max_queries_per_request"):
        ServerConfig(max_queries_per_request=600, max_batch_queries=512)
    with pytest.raises(ValueError, match="server.request_timeout_s"):
        ServerConfig(request_timeout_s=0)
    with pytest.raises(ValueError, match="http:// or https://"):
        RemoteRetriever("localhost:8000")
    with pytest.raises(RequestError):
        parse_request(b'{"queries": ["a"], "topk": true}', CFG)


@pytest.mark.parametrize("method", ["bm25", "dense"])
def test_results_through_the_server_equal_in_process_search(method, index_dir):
    from searchr2.retrieval import IndexConfig, load_retriever
    from tests.test_retrieval import DENSE_QUERIES, QUERIES

    local = load_retriever(method, index_dir, IndexConfig())
    queries = [q for q, _ in QUERIES + DENSE_QUERIES]
    with serve(local) as server:
        client = RemoteRetriever(server.url)
        client.wait_ready(timeout_s=30, poll_s=0.05)
        for k in (1, 3, 5):
            assert client.search(queries, k) == local.search(queries, k)


def test_with_a_server_url_the_stages_open_no_index_and_ask_the_server(tmp_path):
    from searchr2.remote import open_retriever
    from searchr2.retrieval import IndexConfig, RetrievalConfig

    retriever = Scripted()
    with BackgroundServer(create_app(lambda: retriever, CFG, lambda line: None, about={"method": "bm25"})) as server:
        cfg = RetrievalConfig(method="bm25", server_url=server.url, server_wait_s=10)
        remote = open_retriever(cfg, tmp_path / "no-index-here", IndexConfig())   # nothing is opened locally
        assert isinstance(remote, RemoteRetriever) and remote.search(["a"], 2) == retriever.search(["a"], 2)
        with pytest.raises(RetrievalServerError, match=r"serves the bm25 index, but retrieval.method is dense"):
            open_retriever(replace(cfg, method="dense"), tmp_path, IndexConfig())
    with pytest.raises(RetrievalServerError, match=rf"{server.url} was not ready after 0 s .*searchr2.server"):
        open_retriever(replace(cfg, server_wait_s=0.0), tmp_path, IndexConfig())
    with pytest.raises(ValueError, match="retrieval.server_url must start with http"):
        RetrievalConfig(server_url="127.0.0.1:8000")


def test_faiss_gpu_sharding_is_refused_with_a_reason_where_it_cannot_run(index_dir):
    from searchr2.retrieval import IndexConfig, load_retriever
    from searchr2.server import shard_on_gpus

    with pytest.raises(ValueError, match="dense index only"):
        shard_on_gpus(Scripted())
    import faiss

    if hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0:
        pytest.skip("this FAISS has GPUs: the refusal cannot happen here")     # CI and the CPU machines: faiss-cpu
    with pytest.raises(ValueError, match="no GPU support or sees no GPU.*server.faiss_gpu: false"):
        shard_on_gpus(load_retriever("dense", index_dir, IndexConfig()))


def test_torch_gpu_search_is_refused_with_a_reason_where_it_cannot_run(index_dir):
    import torch

    from searchr2.retrieval import IndexConfig, load_retriever
    from searchr2.server import place_index, search_on_torch_gpus

    dense = load_retriever("dense", index_dir, IndexConfig())
    assert place_index(dense, ServerConfig()) is dense                 # the default: as loaded
    with pytest.raises(ValueError, match="dense index only"):
        place_index(Scripted(), ServerConfig(torch_gpu=True))
    with pytest.raises(ValueError, match="faiss_gpu and server.torch_gpu are both true"):
        ServerConfig(faiss_gpu=True, torch_gpu=True)
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU: the refusal cannot happen here")    # CI and the CPU machines have none
    with pytest.raises(ValueError, match=r"torch sees no GPU \(torch .*\); set server.torch_gpu: false"):
        search_on_torch_gpus(dense)


def test_torch_search_through_the_server_finds_what_faiss_finds(index_dir):
    from searchr2.retrieval import IndexConfig, TorchFlatIndex, load_retriever
    from tests.test_retrieval import DENSE_QUERIES, QUERIES

    local = load_retriever("dense", index_dir, IndexConfig())
    served = load_retriever("dense", index_dir, IndexConfig())
    served.index = TorchFlatIndex(served.index, ["cpu", "cpu"])   # what server.torch_gpu does, on the GPUs
    queries = [q for q, _ in QUERIES + DENSE_QUERIES]
    with serve(served) as server:
        client = RemoteRetriever(server.url)
        client.wait_ready(timeout_s=30, poll_s=0.05)
        got, want = client.search(queries, 3), local.search(queries, 3)
    assert [[(h["id"], h["text"]) for h in row] for row in got] == [[(h["id"], h["text"]) for h in row] for row in want]
    assert max(abs(g["score"] - w["score"]) for grow, wrow in zip(got, want) for g, w in zip(grow, wrow)) < 1e-5
