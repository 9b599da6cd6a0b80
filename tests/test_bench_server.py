"""The server benchmark's reading of the batching server's log (benchmarks/bench_server.py)."""
import pytest

from benchmarks.bench_server import batch_stats


def test_batch_stats_reads_the_servers_own_lines():
    from searchr2.server import Batcher
    import asyncio

    lines: list[str] = []

    async def go():
        b = Batcher(window_s=0.05, max_queries=64, log=lines.append)
        b.queue, b.search = asyncio.Queue(), lambda qs, k: [[{"id": q}] * k for q in qs]
        b.stages = lambda: {"encode": 1.5, "index": 2.0}
        runner = asyncio.create_task(b.run())
        await asyncio.gather(*(b.submit([f"q{i}", f"r{i}"], 1) for i in range(3)))
        runner.cancel()

    asyncio.run(go())
    stats = batch_stats(lines, wall_s=1.0)
    assert stats["batches"] == 1 and stats["queries_per_batch_max"] == 6 and stats["requests_per_batch_mean"] == 3
    assert stats["stage_ms_mean"] == {"encode": 2.0, "index": 2.0}        # as the line rounds them


def test_batch_stats_figures():
    lines = ["[server] batch 1: 512 queries from 64 request(s), topk [3], 60 ms",
             "some other line",
             "[server] batch 2: 256 queries from 32 request(s), topk [3, 5], 40 ms"]
    assert batch_stats(lines, wall_s=0.5) == {
        "batches": 2, "queries_per_batch_mean": 384.0, "queries_per_batch_max": 512, "requests_per_batch_mean": 48.0,
        "search_ms_mean": 50.0, "search_ms_max": 60, "busy": 0.2}


def test_batch_stats_means_by_stage():
    lines = ["[server] batch 1: 512 queries from 64 request(s), topk [3], 60 ms (encode 10, index 40, passages 9 ms)",
             "[server] batch 2: 8 queries from 1 request(s), topk [3], 8 ms (encode 2, index 4, passages 1 ms)"]
    stats = batch_stats(lines, wall_s=1.0)
    assert stats["stage_ms_mean"] == {"encode": 6.0, "index": 22.0, "passages": 5.0}
    assert stats["search_ms_mean"] == 34.0 and stats["busy"] == 0.07


@pytest.mark.parametrize("wall", [0.0, 1.0])
def test_batch_stats_no_batches(wall):
    assert batch_stats(["[server] ready"], wall_s=wall) == {"batches": 0}
