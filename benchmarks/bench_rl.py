"""Benchmark one RL step: full Search-R2 against the Search-R1 configuration, same questions, same seed.

    python benchmarks/bench_rl.py                        # params.yaml, data/models/sft, 3 steps per config
    python benchmarks/bench_rl.py --steps 2 --threads 2 --model data/models/sft

Both configurations start from the same weights (``--model``) and play the same questions (the
``rl`` stage's seeded draw for steps 1..N) with the same sampling seed; each step is the stage's own
code (:func:`searchr2.rl.rl_step`, then the reference pass and :func:`searchr2.grpo.ppo_update`).
The configurations differ only where the paper's ablation ladder says (docs/method.md#ablation-ladder):

- ``search_r1``: ``refiner.enabled=false``, ``reward.process=false`` (outcome reward, no refiner);
- ``search_r2``: the params as they are (Meta-Refiner on, hybrid reward, refiner_weight > 0);
- ``search_r2_numbered`` (with ``--numbered``): the same with ``refiner.layout=numbered``, the meta
  prompt that reprints the steps (same model: its refiner was warmed up on the params' layout).

Reported per configuration: seconds per step split into rollout / refine / judge / update, trained
sequences and tokens per step (all of them, and those the update forwarded), and the overhead of
Search-R2 over Search-R1. The configurations alternate step by step, so a change in machine load
hits both, and the order turns round every step (R1, R2 at step 1; R2, R1 at step 2; ...): the arm
that goes second finds the same queries' retrieval and the allocator warm. Use an even ``--steps``.
Results: ``benchmarks/results/rl_step.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import loadavg_fields, machine_line, model_label, write_result


class Arm:
    """One configuration: its own copy of the model, optimizer and reference, stepped by :meth:`step`."""

    def __init__(self, name, model_dir, p, rl_cfg, refiner_cfg, reward_cfg, judge):
        from accelerate import Accelerator

        from searchr2.grpo import TokenLogProbs
        from searchr2.models import load_model
        from searchr2.training import freeze_bottom, make_optimizer

        self.name, self.p, self.cfg, self.refiner_cfg, self.reward_cfg, self.judge = (
            name, p, rl_cfg, refiner_cfg, reward_cfg, judge)
        self.accelerator = Accelerator(cpu=True)
        lm = load_model(model_dir, "float32", "cpu")
        freeze_bottom(lm, rl_cfg.freeze_layers, "rl")
        self.reference = (load_model(model_dir, "float32", "cpu").eval().requires_grad_(False)
                          if rl_cfg.kl_coef > 0 else None)
        self.model, self.optimizer = self.accelerator.prepare(TokenLogProbs(lm), make_optimizer(lm, rl_cfg.lr, rl_cfg.weight_decay))
        self.policy = self.accelerator.unwrap_model(self.model).lm
        self.rows = []

    def step(self, tokenizer, retriever, batch, step: int) -> dict:
        from searchr2.grpo import select_for_update
        from searchr2.rl import rl_step, update_policy

        start = time.perf_counter()
        sequences, advantages, weights, metrics, timings = rl_step(
            self.policy, tokenizer, retriever, batch, self.cfg, self.p.rollout, self.refiner_cfg, self.reward_cfg,
            self.judge, step)
        t0 = time.perf_counter()
        stats = update_policy(self.accelerator, self.model, self.reference, self.optimizer, None, sequences,
                              advantages, weights, self.cfg, step)
        timings["update"] = time.perf_counter() - t0
        row = {"step": step, "seconds": round(time.perf_counter() - start, 2),
               **{f"time_{k}": round(v, 2) for k, v in timings.items()},
               "sequences": len(sequences), "tokens": sum(len(s.token_ids) for s in sequences),
               "forwarded_tokens": sum(len(sequences[i].token_ids)
                                       for i in select_for_update(advantages, weights, self.cfg)),
               "trained_share": round(stats["trained_share"], 3),
               "reward": round(metrics["reward"], 3), "em": round(metrics["em"], 3),
               "revisions_per_traj": metrics.get("revisions_per_traj", 0.0)}
        print(f"  {self.name} step {step}: {json.dumps(row)}", file=sys.stderr, flush=True)
        self.rows.append(row)
        return row

    def summary(self) -> dict:
        n = len(self.rows)
        keys = sorted({k for r in self.rows for k in r if k.startswith("time_")} | {"seconds", "sequences", "tokens",
                                                                                     "forwarded_tokens"})
        return {"steps": n, **{k: round(sum(r.get(k, 0.0) for r in self.rows) / n, 2) for k in keys},
                "rows": self.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/sft")
    parser.add_argument("--steps", type=int, default=3, help="steps per configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rl_step.json")
    parser.add_argument("--numbered", action="store_true", help="add a third arm: refiner.layout=numbered")
    args = parser.parse_args()

    import torch

    from searchr2.judge import make_judge
    from searchr2.models import load_tokenizer
    from searchr2.params import load_params
    from searchr2.retrieval import load_retriever
    from searchr2.rl import split_questions, step_questions
    from searchr2.paths import INDEX_DIR, QA_DIR
    from searchr2.data import load_train_records

    torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    p = load_params()
    if not p.refiner.enabled or not p.reward.process:
        raise SystemExit("params.yaml is not the full Search-R2 configuration (refiner.enabled and reward.process)")
    tokenizer = load_tokenizer(args.model)
    retriever = load_retriever(p.retrieval.method, INDEX_DIR, p.index)
    pool, _ = split_questions(load_train_records(QA_DIR, p.data.train_sets), p.rl)
    arms = [Arm("search_r1", args.model, p, p.rl, dataclasses.replace(p.refiner, enabled=False),
                dataclasses.replace(p.reward, process=False), None),
            Arm("search_r2", args.model, p, p.rl, p.refiner, p.reward, make_judge(p.reward))]
    if args.numbered:
        arms.append(Arm("search_r2_numbered", args.model, p, p.rl, dataclasses.replace(p.refiner, layout="numbered"),
                        p.reward, make_judge(p.reward)))
    load_before = os.getloadavg()
    for step in range(1, args.steps + 1):
        batch = step_questions(pool, p.rl, step)
        # the arm that goes second plays the same questions with warm retrieval and allocator caches, so the
        # order turns round every step
        for arm in (arms if step % 2 else arms[::-1]):
            torch.manual_seed(step)
            arm.step(tokenizer, retriever, batch, step)
    results = {arm.name: arm.summary() for arm in arms}
    r1, r2 = results["search_r1"]["seconds"], results["search_r2"]["seconds"]
    out = {"model": model_label(args.model), "threads": args.threads, "torch": torch.__version__, "machine": machine_line(),
           "group_size": p.rl.group_size, "questions_per_step": p.rl.questions_per_step,
           "max_turns": p.rollout.max_turns, "max_new_tokens": p.rollout.max_new_tokens,
           "judge": p.reward.judge, "refiner_layout": p.refiner.layout, "overhead_r2_over_r1": round(r2 / r1 - 1, 4),
           **({"overhead_r2_numbered_over_r1": round(results["search_r2_numbered"]["seconds"] / r1 - 1, 4)}
              if args.numbered else {}),
           **loadavg_fields(load_before), "results": results}
    write_result(args.out, out)
    print(f"search_r1 {r1:.1f} s/step, search_r2 {r2:.1f} s/step: overhead {100 * (r2 / r1 - 1):+.1f}%")
    if args.numbered:
        r2n = results["search_r2_numbered"]["seconds"]
        print(f"search_r2_numbered {r2n:.1f} s/step: overhead {100 * (r2n / r1 - 1):+.1f}%")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
