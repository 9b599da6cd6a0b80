"""One decoding step of the rollout engine against the machine's memory bandwidth: is decoding bound by
the bytes it must read?

    python benchmarks/bench_decode_step.py                                   # data/models/base
    python benchmarks/bench_decode_step.py --batches 15 64 --contexts 600 1200 --name decode-step
    python benchmarks/bench_decode_step.py --arms bfloat16 bfloat16-packed --name decode-packed

A decoding step feeds one new token per row through the whole model. Whatever the batch, it reads every
weight once (the output head included, since it scores the last position) and, in attention, every
cached key and value of every row. When those bytes divided by the memory bandwidth come close to the
step's time, no rearrangement of the same arithmetic makes the step much faster: only reading fewer
bytes does (fewer or shorter rows, cached keys shared between rows, a smaller dtype).

For each arm (a dtype, or bfloat16 with the linear weights packed as the stages pack inference models,
:mod:`searchr2.packing`), batch (rows) and context (cached tokens per row) the script fills a
:func:`searchr2.kv_cache.growing_cache` (the engine's cache) with random keys and values, times
``--steps`` decoding steps as the engine runs them (``logits_to_keep=1``), and splits a profiled
repeat of them into attention (``scaled_dot_product_attention`` and what it calls), the linear layers
(``mm``/``addmm``, or the packed product) and the rest. The memory bandwidth is measured in the same
process: the best of several full reads (``sum``) of a buffer far larger than the caches. The bound of a step is
(weight bytes + key/value bytes) / that bandwidth.

Last, for each linear-layer shape of the model, the row counts (``--agreement-rows``) at which the packed
bf16 product is not bit-identical to the plain one: why :data:`searchr2.packing.MAX_PACKED_ROWS` exists.

The cache's content does not change the arithmetic, so random keys stand in for a real context; the
model is only needed for its shapes and weights (any trained copy gives the same times).

Results: ``benchmarks/results/<name>.json`` and ``.md``, with ``lscpu``'s model and flags.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import loadavg_fields, lscpu, markdown_head, model_label, write_result  # noqa: E402


def read_bandwidth(torch, megabytes: int, repeats: int) -> float:
    """Bytes/s of the best of ``repeats`` full reads (a float32 ``sum``) of a ``megabytes`` buffer."""
    x = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    x.sum()                                                       # pages touched once before timing
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def filled_cache(torch, lm, rows: int, context: int, dtype):
    """The engine's growing cache holding ``context`` random keys and values per row in every layer."""
    from searchr2.kv_cache import growing_cache

    c = lm.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    cache = growing_cache(c)
    for layer in range(c.num_hidden_layers):
        shape = (rows, c.num_key_value_heads, context, head_dim)
        cache.update(torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype), layer)
    return cache, head_dim


def kv_bytes(lm, rows: int, context: int, head_dim: int, element: int) -> int:
    """Bytes of keys and values a decoding step reads: every layer, every row, every cached token."""
    c = lm.config
    return c.num_hidden_layers * 2 * rows * c.num_key_value_heads * context * head_dim * element


#: profiler op names charged to attention (the fused kernel, or the eager path's products and softmax)
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                 "aten::bmm", "aten::_softmax")
LINEAR_OPS = ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise")


def time_steps(torch, lm, rows: int, context: int, steps: int, dtype, profile: bool) -> dict:
    """Seconds per decoding step (mean of ``steps`` after 3 warm-up steps) and, with ``profile``, the
    shares of attention, linear layers and the rest in a profiled repeat."""
    cache, head_dim = filled_cache(torch, lm, rows, context, dtype)
    mask = torch.ones(rows, context + 3 + 2 * steps + 1, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)

    def step(i: int):
        token = torch.randint(100, lm.config.vocab_size - 1, (rows, 1), generator=gen)
        lm(input_ids=token, attention_mask=mask[:, :context + i + 1], past_key_values=cache, use_cache=True,
           position_ids=torch.full((rows, 1), context + i), logits_to_keep=1)

    with torch.inference_mode():
        for i in range(3):
            step(i)
        t = time.perf_counter()
        for i in range(3, 3 + steps):
            step(i)
        seconds = (time.perf_counter() - t) / steps
        out = {"rows": rows, "context": context, "step_seconds": round(seconds, 5), "head_dim": head_dim}
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as profiler

            with profiler(activities=[ProfilerActivity.CPU]) as prof:
                for i in range(3 + steps, 3 + 2 * steps):
                    step(i)
            self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
            total = sum(self_us.values())
            attention = sum(v for k, v in self_us.items() if k in ATTENTION_OPS)
            linear = sum(v for k, v in self_us.items() if k in LINEAR_OPS)
            out.update(attention_share=round(attention / total, 4), linear_share=round(linear / total, 4),
                       other_share=round(1 - (attention + linear) / total, 4))
    return out


def packed_agreement(torch, lm, rows: list[int]) -> dict:
    """For each distinct linear-layer shape of ``lm`` (``out x in``), the row counts at which oneDNN's packed
    bf16 product (without :data:`searchr2.packing.MAX_PACKED_ROWS`) is not bit-identical to the plain one,
    on random inputs. ``{}`` where packing is unavailable."""
    from searchr2.packing import pack_weight, packed_product, packing_available

    if not packing_available():
        return {}
    gen = torch.Generator().manual_seed(0)
    shapes = sorted({tuple(m.weight.shape) for m in lm.modules() if isinstance(m, torch.nn.Linear)})
    out = {}
    for n_out, n_in in shapes:
        w = torch.randn(n_out, n_in, generator=gen).to(torch.bfloat16)
        packed = pack_weight(w)
        differ = []
        for m in rows:
            x = torch.randn(m, n_in, generator=gen).to(torch.bfloat16)
            if not torch.equal(packed_product(x, packed), torch.nn.functional.linear(x, w)):
                differ.append(m)
        out[f"{n_out}x{n_in}"] = differ
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/base")
    parser.add_argument("--arms", nargs="+", default=["bfloat16", "bfloat16-packed", "float32"],
                        help="a dtype, or bfloat16-packed: loaded as the stages load inference models "
                             "(linear weights packed, searchr2.packing)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 15, 64],
                        help="rows per step (15: an RL step's 3 questions x 5; 64: rollout.batch_size)")
    parser.add_argument("--contexts", nargs="+", type=int, default=[300, 600, 1200], help="cached tokens per row")
    parser.add_argument("--steps", type=int, default=20, help="timed decoding steps per shape")
    parser.add_argument("--bandwidth-mb", type=int, default=2048, help="buffer read to measure the bandwidth")
    parser.add_argument("--agreement-rows", nargs="*", type=int,
                        default=[*range(1, 130), 200, 257, 511, 1000, 3490],
                        help="row counts at which the packed and plain bf16 products are compared bit for bit")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="decode-step", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args(argv)

    import torch

    from searchr2.models import load_model

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    bandwidth = read_bandwidth(torch, args.bandwidth_mb, repeats=5)
    rows = []
    for arm in args.arms:
        dtype_name = arm.removesuffix("-packed")
        lm = load_model(args.model, dtype_name, inference=arm.endswith("-packed"))
        lm.eval()
        dtype = getattr(torch, dtype_name)
        element = torch.tensor([], dtype=dtype).element_size()
        weights = sum(p.numel() for p in lm.parameters()) * element      # tied weights are counted once
        for b in args.batches:
            for ctx in args.contexts:
                r = time_steps(torch, lm, b, ctx, args.steps, dtype, profile=True)
                kv = kv_bytes(lm, b, ctx, r["head_dim"], element)
                bound = (weights + kv) / bandwidth
                r.update(arm=arm, weight_mb=round(weights / 2**20, 1), kv_mb=round(kv / 2**20, 1),
                         bound_seconds=round(bound, 5), bound_share=round(bound / r["step_seconds"], 3),
                         attention_gb_s=round(kv / (r["step_seconds"] * r["attention_share"]) / 1e9, 2),
                         tokens_per_second=round(b / r["step_seconds"], 1))
                rows.append(r)
                print(f"{arm} rows {b} context {ctx}: {r['step_seconds'] * 1000:.1f} ms a step, "
                      f"bound {bound * 1000:.1f} ms ({r['bound_share']:.0%}), attention {r['attention_share']:.0%}",
                      flush=True)
        del lm

    agreement = packed_agreement(torch, load_model(args.model, "bfloat16"), args.agreement_rows)
    result = {"name": args.name, "packed_rows_differing": agreement, "model": model_label(args.model),
              "threads": args.threads, "steps": args.steps,
              "torch": torch.__version__, "cpu": lscpu(), "read_bandwidth_gb_s": round(bandwidth / 1e9, 2),
              "shapes": rows, **loadavg_fields(load_before)}
    out = ROOT / "benchmarks" / "results"
    write_result(out / f"{args.name}.json", result)
    lines = markdown_head(args.name, result, torch.__version__, args.threads,
                          f"{result['model']}; memory read bandwidth {result['read_bandwidth_gb_s']} GB/s")
    lines += ["| arm | rows | context | ms a step | tokens/s | weights MB | keys+values MB | bound ms | bound / step "
              "| attention | linear | other | attention GB/s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['rows']} | {r['context']} | {r['step_seconds'] * 1000:.1f} | "
                     f"{r['tokens_per_second']} | {r['weight_mb']} | {r['kv_mb']} | {r['bound_seconds'] * 1000:.1f} | "
                     f"{r['bound_share']:.0%} | {r['attention_share']:.0%} | {r['linear_share']:.0%} | "
                     f"{r['other_share']:.0%} | {r['attention_gb_s']} |")
    if agreement:
        lines += ["", f"Packed against plain bf16 product, bit for bit, at {len(args.agreement_rows)} row counts "
                  f"({min(args.agreement_rows)} to {max(args.agreement_rows)}); the row counts that differ, "
                  "by layer shape:",
                  ""] + [f"- {shape}: {differ or 'none'}" for shape, differ in agreement.items()]
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
