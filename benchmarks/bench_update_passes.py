"""The RL update's forward and backward passes with and without the padding mask, on real sequences.

    python benchmarks/bench_update_passes.py                            # params.yaml, data/models/sft
    python benchmarks/bench_update_passes.py --repeats 3 --name update-passes

One RL step of stage ``rl`` (:func:`searchr2.rl.rl_step`, step ``--step``) makes the update's rows (the
trajectories and the refiner decisions packed into them) from ``--model``; then the two passes of
:func:`searchr2.rl.update_policy` run on all of them, in the micro-batches of ``rl.micro_batch_tokens``
the update plans, as the stage sets the models up (:func:`benchmarks.bench_speed.rl_arm`: the policy in
float32 under ``rl.mixed_precision``'s autocast with ``rl.freeze_layers`` frozen, the reference in that
precision with packed weights):

- ``reference``: :func:`searchr2.grpo.compute_logprobs` with the reference model;
- ``policy``: the prepared policy's forward (:func:`searchr2.grpo.sequence_logprobs`) and the backward of a
  loss that weighs every generated token (no optimizer step, so every repeat sees the same weights).

Two arms, alternating repeat by repeat: ``mask`` hands the decoder the right-padded batch's attention
mask (what the code did before); ``causal`` gives it none (:func:`searchr2.training.body_attention_mask`,
what it does now). Reported: seconds per pass (median of ``--repeats``), the share of the pass spent in
attention (``scaled_dot_product`` kernels, forward and backward), in matrix products and in the rest
(torch's profiler, one extra repeat per arm), whether the log-probabilities are equal to the bit, and
the gradient's relative difference between the arms. Results: ``benchmarks/results/<name>.json`` and
``.md``, with ``lscpu``'s model and flags.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_speed import rl_arm, rl_setting  # noqa: E402
from benchmarks.profile_rl import padding_mask_kept  # noqa: E402
from benchmarks.run_info import loadavg_fields, lscpu, markdown_head, model_label, write_result  # noqa: E402

ARMS = ("mask", "causal")


def use_arm(arm: str):
    """The context in which :func:`searchr2.grpo.sequence_logprobs` runs as ``arm`` does."""
    return contextlib.nullcontext() if arm == "causal" else padding_mask_kept()


def policy_pass(arm_models: dict, batches: list[dict], coefs: list) -> list:
    """Forward and backward of every micro-batch; returns the log-probabilities (detached) and leaves the
    gradient in ``.grad``."""
    model, accelerator = arm_models["model"], arm_models["accelerator"]
    model.train()
    out = []
    for batch, coef in zip(batches, coefs):
        logp = model(**batch)
        accelerator.backward((logp * coef).sum())
        out.append(logp.detach())
    return out


def categories(prof) -> dict[str, float]:
    """Self CPU seconds of a profile split into attention, matrix products and the rest."""
    split = {"attention": 0.0, "matmul": 0.0, "other": 0.0}
    for e in prof.key_averages():
        name = e.key
        kind = ("attention" if "scaled_dot_product" in name
                else "matmul" if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")
                else "other")
        split[kind] += e.self_cpu_time_total / 1e6
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/sft")
    parser.add_argument("--step", type=int, default=2, help="the RL step whose questions make the rows")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per arm (alternating)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="update-passes", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from searchr2.data import load_train_records
    from searchr2.grpo import collate_sequences, compute_logprobs, token_coefficients
    from searchr2.paths import QA_DIR
    from searchr2.rl import rl_step, split_questions, step_questions
    from searchr2.training import plan_micro_batches

    p, tokenizer, retriever, judge = rl_setting(args.model, args.threads)
    arm_models = rl_arm(p, args.model, "after")
    pool, _ = split_questions(load_train_records(QA_DIR, p.data.train_sets), p.rl)
    torch.manual_seed(args.step)
    sequences, _, weights, _, _ = rl_step(arm_models["generator"].weights(), tokenizer, retriever,
                                          step_questions(pool, p.rl, args.step), p.rl, p.rollout, p.refiner,
                                          p.reward, judge, args.step)
    plan = plan_micro_batches([len(s.token_ids) for s in sequences], p.rl.micro_batch_tokens, p.rl.seed)
    batches = [collate_sequences([sequences[i] for i in group]) for group in plan]
    coefs = []
    for group, batch in zip(plan, batches):
        c = torch.zeros(batch["input_ids"].shape)
        for row, i in enumerate(group):
            own = token_coefficients(sequences[i], max(weights[i], 1.0))
            c[row, :len(own)] = own
        coefs.append(c)
    tokens = sum(len(s.token_ids) for s in sequences)
    padded = sum(b["input_ids"].numel() for b in batches)
    print(f"[bench] {len(sequences)} rows, {tokens} tokens, {len(batches)} micro-batches ({padded} padded tokens)",
          file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    seconds = {arm: {"reference": [], "policy": []} for arm in ARMS}
    outputs: dict[str, dict] = {}

    def run(arm: str) -> dict:
        arm_models["optimizer"].zero_grad(set_to_none=True)
        with use_arm(arm):
            t0 = time.perf_counter()
            ref = compute_logprobs(arm_models["reference"], sequences, p.rl.micro_batch_tokens)
            t1 = time.perf_counter()
            logp = policy_pass(arm_models, batches, coefs)
            t2 = time.perf_counter()
        grad = torch.cat([q.grad.flatten() for q in arm_models["lm"].parameters() if q.grad is not None])
        return {"reference": t1 - t0, "policy": t2 - t1, "ref": ref, "logp": logp, "grad": grad}

    run("causal")                                              # warm-up: first calls pay for allocations
    for r in range(args.repeats):
        for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):
            out = run(arm)
            for part in ("reference", "policy"):
                seconds[arm][part].append(out[part])
            outputs[arm] = out
            print(f"[bench] repeat {r + 1} {arm}: reference {out['reference']:.2f} s, policy {out['policy']:.2f} s",
                  file=sys.stderr, flush=True)
    shares = {}
    for arm in ARMS:
        with use_arm(arm):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                compute_logprobs(arm_models["reference"], sequences, p.rl.micro_batch_tokens)
            shares[f"{arm} reference"] = categories(prof)
            arm_models["optimizer"].zero_grad(set_to_none=True)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                policy_pass(arm_models, batches, coefs)
            shares[f"{arm} policy"] = categories(prof)

    a, b = outputs["mask"], outputs["causal"]
    same_ref = all(torch.equal(x, y) for x, y in zip(a["ref"], b["ref"]))
    same_logp = all(torch.equal(x, y) for x, y in zip(a["logp"], b["logp"]))
    grad_rel = float((a["grad"] - b["grad"]).norm() / b["grad"].norm())
    median = {arm: {part: round(statistics.median(v), 3) for part, v in parts.items()} for arm, parts in seconds.items()}
    result = {"name": args.name, "model": model_label(args.model), "torch": torch.__version__, "threads": args.threads,
              "cpu": lscpu(), "rows": len(sequences), "tokens": tokens, "micro_batches": len(batches),
              "padded_tokens": padded, "mixed_precision": arm_models["accelerator"].mixed_precision,
              "seconds": seconds, "median_seconds": median,
              "profile_seconds": {k: {c: round(v, 3) for c, v in split.items()} for k, split in shares.items()},
              "reference_logprobs_identical": same_ref, "policy_logprobs_identical": same_logp,
              "gradient_relative_difference": grad_rel, **loadavg_fields(load_before)}
    out_dir = ROOT / "benchmarks" / "results"
    write_result(out_dir / f"{args.name}.json", result)

    lines = [*markdown_head(args.name, result, torch.__version__, args.threads),
             f"{len(sequences)} update rows of RL step {args.step} ({tokens} tokens; {len(batches)} micro-batches, "
             f"{padded} padded tokens), autocast {result['mixed_precision']}; median of {args.repeats} repeats.", "",
             "| pass | mask s | causal s | causal / mask | attention share, mask | attention share, causal |",
             "|---|---:|---:|---:|---:|---:|"]
    for part in ("reference", "policy"):
        share = {arm: shares[f"{arm} {part}"]["attention"] / sum(shares[f"{arm} {part}"].values()) for arm in ARMS}
        lines.append(f"| {part} | {median['mask'][part]} | {median['causal'][part]} | "
                     f"{median['causal'][part] / median['mask'][part]:.2f} | {100 * share['mask']:.0f}% | "
                     f"{100 * share['causal']:.0f}% |")
    both = {arm: median[arm]["reference"] + median[arm]["policy"] for arm in ARMS}
    lines += [f"| both | {both['mask']:.3f} | {both['causal']:.3f} | {both['causal'] / both['mask']:.2f} | | |", "",
              f"Reference log-probabilities identical: {same_ref}; policy log-probabilities identical: {same_logp}; "
              f"gradient relative difference (L2): {grad_rel:.2e}."]
    (out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
