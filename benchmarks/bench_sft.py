"""Benchmark the SFT training step: tokens/s of SmolLM2-135M on this CPU, by number of frozen layers.

    python benchmarks/bench_sft.py                                  # freeze 0 and 10, data/models/base
    python benchmarks/bench_sft.py --freeze 0 10 20 --steps 3 --threads 2
    python benchmarks/bench_sft.py --freeze 10 --precision fp32 bf16   # autocast (sft.mixed_precision)

Each configuration loads the base model afresh and runs the trainer's own step (``searchr2.sft``:
``freeze_bottom``, ``MaskedLMLoss``, ``backward_step``, gradient clipping, AdamW) on synthetic records
of about ``--tokens`` tokens shaped like agent trajectories (a prompt and tool outputs with mask 0, the
model's turns with mask 1, about a third of the tokens), grouped into micro-batches by
``plan_micro_batches`` exactly as in training. One warm-up step is not timed. Reported per setting:
tokens/s (all non-padding tokens forwarded, as ``results/sft.json`` counts them), loss tokens/s,
seconds per step, trainable parameters, and the load average before and after (the machine is shared:
a busy neighbour makes every figure pessimistic). Results go to ``benchmarks/results/sft_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import loadavg_fields, machine_line, model_label, write_result


def synthetic_records(n: int, tokens: int, vocab: int, seed: int):
    """``n`` records of ``tokens`` +-10% ids: prompt (0), then turns (1) alternating with tool text (0)."""
    from searchr2.training import Record
    import torch

    rng = random.Random(seed)
    records = []
    for i in range(n):
        length = int(tokens * rng.uniform(0.9, 1.1))
        mask = [0] * 120
        while len(mask) < length:
            mask += [1] * rng.randint(40, 90) + [0] * rng.randint(60, 160)   # a turn, then retrieved documents
        mask = mask[:length]
        ids = [rng.randrange(vocab) for _ in range(length)]
        records.append(Record(f"r{i}", "synthetic", torch.tensor(ids, dtype=torch.int32),
                              torch.tensor(mask, dtype=torch.bool)))
    return records


def bench(base: Path, freeze: int, precision: str, args) -> dict:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from searchr2.distributed import accelerate_precision
    from searchr2.models import load_model
    from searchr2.sft import MaskedLMLoss, MicroBatches, backward_step
    from searchr2.training import freeze_bottom, plan_micro_batches

    lm = load_model(base)
    freeze_bottom(lm, freeze, "sft")
    lm.train()
    model = MaskedLMLoss(lm)
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    records = synthetic_records(args.micro_batches * (args.steps + 1) * 4, args.tokens, lm.config.vocab_size, 0)
    batches = MicroBatches(records, plan_micro_batches([len(r) for r in records], args.micro_batch_tokens, 0), 0)
    batches.set_epoch(0)
    AcceleratorState._reset_state(True)    # the state is a process-wide singleton; each setting sets its own
    accelerator = Accelerator(cpu=True, mixed_precision=accelerate_precision(precision))
    model = accelerator.prepare(model)     # under mixed precision, wraps the forward in autocast as the trainer does
    stream = iter(range(len(batches)))
    timings = []
    for step in range(args.steps + 1):
        group = [batches[next(stream)] for _ in range(args.micro_batches)]
        start = time.perf_counter()
        stats = backward_step(accelerator, model, group)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        print(f"  freeze {freeze} {precision} step {step}{' (warm-up)' if step == 0 else ''}: {stats['tokens']} tokens in "
              f"{seconds:.1f} s = {stats['tokens'] / seconds:.0f} tokens/s", file=sys.stderr, flush=True)
        if step:
            timings.append((seconds, stats["tokens"], stats["loss_tokens"]))
    seconds = sum(t for t, _, _ in timings)
    return {"freeze_layers": freeze, "mixed_precision": precision, "trainable_params": sum(p.numel() for p in params),
            "steps": len(timings), "micro_batches_per_step": args.micro_batches,
            "tokens": sum(n for _, n, _ in timings), "loss_tokens": sum(n for _, _, n in timings),
            "seconds": round(seconds, 2), "s_per_step": round(seconds / len(timings), 2),
            "tokens_per_s": round(sum(n for _, n, _ in timings) / seconds, 1),
            "loss_tokens_per_s": round(sum(n for _, _, n in timings) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/base")
    parser.add_argument("--freeze", type=int, nargs="+", default=[0, 10])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"],
                        help="autocast settings to compare (sft.mixed_precision); fp32: none")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per setting (after one warm-up)")
    parser.add_argument("--micro-batches", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--micro-batch-tokens", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=800, help="mean record length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sft_speed.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    results = []
    for freeze in args.freeze:
        for precision in args.precision:
            torch.manual_seed(0)
            results.append(bench(args.model, freeze, precision, args))
            print(json.dumps(results[-1]), flush=True)
    out = {"model": model_label(args.model), "threads": args.threads, "record_tokens": args.tokens,
           "micro_batch_tokens": args.micro_batch_tokens, "torch": torch.__version__, "machine": machine_line(),
           **loadavg_fields(load_before), "results": results}
    write_result(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
