"""Rollouts on both generation back-ends (``rollout.engine: hf | vllm``), side by side in one run.

    python benchmarks/bench_engines.py                                  # params.yaml, data/models/sft
    python benchmarks/bench_engines.py --dtype float32 --eval-questions 10 --groups 3 --name engines

Both back-ends generate with the same weights (``--model``, in ``--dtype``; ``auto``: ``evaluate.dtype`` as
this machine resolves it), the default world's questions and BM25 index, and ``params.yaml``'s rollout
settings (``rollout.batch_size`` is the Hugging Face batch and vLLM's largest):

- ``greedy``: the first ``--eval-questions`` questions of every eval set, answered greedily in one call, as
  stage ``evaluate`` does; compared: seconds, generated tokens/s, and how many trajectories are identical
  (token ids, loss masks, stop reasons, steps);
- ``sampled``: ``--groups`` train questions x ``rl.group_size`` trajectories, sampled as an RL step's rollout
  (the same seed, but the back-ends draw their random numbers differently, so the samples differ);
  compared: seconds and generated tokens/s.

vLLM's engine start (load, KV cache allocation) is timed on its own and not counted in its rollouts; the
first call of each back-end is a warm-up of two questions, not counted either. Results:
``benchmarks/results/<name>.json`` and ``.md``, with ``lscpu``'s model and flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import loadavg_fields, lscpu, markdown_head, model_label, write_result  # noqa: E402


def summary(trajs, seconds: float) -> dict:
    generated = sum(sum(t.loss_mask) for t in trajs)
    return {"seconds": round(seconds, 2), "trajectories": len(trajs), "generated_tokens": generated,
            "trajectory_tokens": sum(len(t.token_ids) for t in trajs),
            "generated_tokens_per_s": round(generated / seconds, 2),
            "stop_reasons": {r: sum(t.stop_reason == r for t in trajs) for r in sorted({t.stop_reason for t in trajs})}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("data/models/sft"))
    parser.add_argument("--dtype", default="auto", help="float32 | bfloat16 | auto (evaluate.dtype, resolved)")
    parser.add_argument("--eval-questions", type=int, default=10, help="greedy questions per eval set")
    parser.add_argument("--groups", type=int, default=3, help="sampled train questions (x rl.group_size)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    parser.add_argument("--name", default="engines")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    from searchr2.data import load_eval_set, load_train_records
    from searchr2.engine import VLLMEngine
    from searchr2.models import load_model, load_tokenizer, resolve_dtype
    from searchr2.params import load_params
    from searchr2.paths import INDEX_DIR, QA_DIR
    from searchr2.remote import open_retriever
    from searchr2.rl import split_questions, step_questions
    from searchr2.rollout import rollout

    p = load_params()
    dtype = resolve_dtype(p.evaluate.dtype if args.dtype == "auto" else args.dtype, "cpu")
    tok = load_tokenizer(args.model)
    retriever = open_retriever(p.retrieval, INDEX_DIR, p.index)
    greedy_cfg = dataclasses.replace(p.rollout, do_sample=False)
    sampled_cfg = dataclasses.replace(p.rollout, do_sample=True, seed=p.rl.seed * 100_003 + 1)
    questions = [r["question"] for name in p.data.test_sets
                 for r in load_eval_set(QA_DIR, name, args.eval_questions)]
    pool, _ = split_questions(load_train_records(QA_DIR, p.data.train_sets), p.rl)
    group = [r["question"] for r in step_questions(pool, dataclasses.replace(p.rl, questions_per_step=args.groups), 1)
             for _ in range(p.rl.group_size)]

    before = os.getloadavg()
    result = {"model": model_label(args.model), "dtype": dtype, "cpu": lscpu(), "threads": args.threads,
              "batch_size": p.rollout.batch_size, "greedy_questions": len(questions), "sampled": len(group)}
    runs, arms = {}, {}
    for arm in ("hf", "vllm"):
        t0 = time.perf_counter()
        if arm == "hf":
            model = load_model(args.model, dtype, "cpu", inference=True)
        else:
            model = VLLMEngine(args.model, p.rollout.vllm, dtype, p.rollout.max_context_tokens, p.rollout.batch_size,
                               p.rollout.seed)
        start = time.perf_counter() - t0
        rollout(model, tok, retriever, questions[:2], greedy_cfg)                      # warm-up
        t0 = time.perf_counter()
        greedy = rollout(model, tok, retriever, questions, greedy_cfg)
        greedy_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sampled = rollout(model, tok, retriever, group, sampled_cfg)
        sampled_s = time.perf_counter() - t0
        runs[arm] = greedy
        arms[arm] = {"start_seconds": round(start, 2), "greedy": summary(greedy, greedy_s),
                     "sampled": summary(sampled, sampled_s)}
        if arm == "vllm":
            model.close()
        del model
        print(f"[bench_engines] {arm}: {arms[arm]}", file=sys.stderr)
    result["arms"] = arms
    result["identical_greedy_trajectories"] = sum(
        (a.token_ids, a.loss_mask, a.stop_reason, a.steps) == (b.token_ids, b.loss_mask, b.stop_reason, b.steps)
        for a, b in zip(runs["hf"], runs["vllm"]))
    result["identical_greedy_answers"] = sum(a.answer == b.answer for a, b in zip(runs["hf"], runs["vllm"]))
    result.update(loadavg_fields(before))
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    write_result(out, result)
    md = markdown_head(args.name, result, torch.__version__, args.threads,
                       f"{result['model']} in {dtype}, rollout.batch_size {p.rollout.batch_size}")
    md += ["| back-end | start s | greedy: s | generated tok/s | sampled: s | generated tok/s |",
           "|---|---:|---:|---:|---:|---:|"]
    for arm, a in arms.items():
        md.append(f"| {arm} | {a['start_seconds']} | {a['greedy']['seconds']} | {a['greedy']['generated_tokens_per_s']} "
                  f"| {a['sampled']['seconds']} | {a['sampled']['generated_tokens_per_s']} |")
    md += ["", f"Greedy: {len(questions)} questions; identical trajectories (ids, masks, stop reasons, steps) "
           f"{result['identical_greedy_trajectories']} of {len(questions)}, identical answers "
           f"{result['identical_greedy_answers']}. Sampled: {len(group)} trajectories ({args.groups} questions x "
           f"{p.rl.group_size})."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
