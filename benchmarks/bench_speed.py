"""The RL step and the agent evaluation before and after the issue-17 speed work, in one run: same
weights, same questions, same seeds, and whether they produce the same tokens.

    python benchmarks/bench_speed.py                          # params.yaml, data/models/sft
    python benchmarks/bench_speed.py --steps 2 --eval-questions 20 --name speed

The two arms differ only in the engine's speed features; everything else is ``params.yaml``:

- ``before``: the engine as it was: Hugging Face's ``DynamicCache`` (copied whole at every decoded
  token), no shared-prefix prefill (``rollout.share_prefix: false``), generation batches of 32, the
  evaluation answering one eval set at a time, the update's forward passes with their padding mask,
  and everything in float32;
- ``after``: the code as it is: the in-place growing cache (:mod:`searchr2.kv_cache`), shared
  prefixes fed once, ``rollout.batch_size`` from the params, the eval sets pooled
  (:func:`searchr2.evaluation.run_system`), the update's forward passes causal without a padding mask
  (:func:`searchr2.training.body_attention_mask`), and the params' precisions as this machine resolves them:
  ``rl.generate_dtype`` for generation (:class:`searchr2.rl.Generator`), ``rl.mixed_precision`` for
  the update's autocast and the reference model, ``evaluate.dtype`` for the evaluated model; in
  bfloat16 on a CPU the inference models' linear weights are packed (:mod:`searchr2.packing`), as the
  stages load them.

RL: each arm loads the model afresh from ``--model`` and runs steps 1..``--steps`` of stage ``rl``
(:func:`searchr2.rl.rl_step` and :func:`searchr2.rl.update_policy`); the arms alternate step by step and
the order turns round every step. Compared: seconds per step and per phase, and the update's rows
(trajectories and refiner decisions): how many have identical token ids in both arms.
Evaluation: greedy agent rollouts of the first ``--eval-questions`` questions of every eval set with
the model loaded in each arm's dtype; compared: questions/s, exact match, and how many trajectories
(token ids) and predictions are identical. Results: ``benchmarks/results/<name>.json`` and ``.md``, with ``lscpu``'s model and flags.
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

from benchmarks.profile_rl import ARMS, engine, rollout_config  # noqa: E402
from benchmarks.run_info import loadavg_fields, lscpu, markdown_head, model_label, write_result  # noqa: E402



def precisions(p, arm: str) -> dict:
    """(update autocast, generation dtype, evaluation dtype) of ``arm``: float32 throughout before, the
    params as this machine resolves them after."""
    from searchr2.distributed import resolve_precision
    from searchr2.models import resolve_dtype

    if arm == "before":
        return {"mixed_precision": "fp32", "generate_dtype": "float32", "eval_dtype": "float32"}
    return {"mixed_precision": resolve_precision(p.rl.mixed_precision, p.rl.device),
            "generate_dtype": resolve_dtype(p.rl.generate_dtype, p.rl.device),
            "eval_dtype": resolve_dtype(p.evaluate.dtype, p.evaluate.device)}


def rl_arm(p, model_dir: Path, arm: str):
    """A fresh policy, reference, optimizer and generating copy from ``model_dir``, as stage rl sets them up."""
    from accelerate.state import AcceleratorState

    from searchr2.distributed import make_accelerator, precision_dtype
    from searchr2.grpo import TokenLogProbs
    from searchr2.models import load_model
    from searchr2.rl import Generator
    from searchr2.training import freeze_bottom, make_optimizer

    cfg, prec = p.rl, precisions(p, arm)
    # Accelerate keeps one process-wide state; each arm sets its own precision. prepare() wraps the model's
    # forward in that arm's autocast, which stays with the model.
    AcceleratorState._reset_state(True)
    accelerator = make_accelerator(cfg.device, prec["mixed_precision"], cfg.max_grad_norm, "rl")
    lm = load_model(model_dir, "float32", "cpu")
    freeze_bottom(lm, cfg.freeze_layers, "rl")
    reference = (load_model(model_dir, precision_dtype(prec["mixed_precision"]), "cpu", inference=True)
                 if cfg.kl_coef > 0 else None)
    model, optimizer = accelerator.prepare(TokenLogProbs(lm), make_optimizer(lm, cfg.lr, cfg.weight_decay))
    return {"accelerator": accelerator, "lm": lm, "reference": reference, "model": model, "optimizer": optimizer,
            "generator": Generator(lm, prec["generate_dtype"])}


def rl_setting(model: Path, threads: int):
    """``(params, tokenizer, retriever, judge)`` as stage rl loads them, from ``params.yaml`` and ``model``'s
    tokenizer, with torch on ``threads`` threads and the repository root as the working directory."""
    import torch

    from searchr2.judge import make_judge
    from searchr2.models import load_tokenizer
    from searchr2.params import load_params
    from searchr2.paths import INDEX_DIR
    from searchr2.retrieval import load_retriever

    torch.set_num_threads(threads)
    os.chdir(ROOT)
    p = load_params()
    return p, load_tokenizer(model), load_retriever(p.retrieval.method, INDEX_DIR, p.index), make_judge(p.reward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/sft")
    parser.add_argument("--steps", type=int, default=2, help="RL steps per arm (alternating; 0 skips the RL part)")
    parser.add_argument("--eval-questions", type=int, default=20, help="questions per eval set (0 skips it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="speed", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args()

    import torch

    from searchr2.data import load_eval_set, load_train_records
    from searchr2.evaluation import greedy, run_system
    from searchr2.models import load_model
    from searchr2.paths import QA_DIR
    from searchr2.rl import rl_step, split_questions, step_learning_rates, step_questions, update_policy
    from searchr2.rollout import rollout

    p, tokenizer, retriever, judge = rl_setting(args.model, args.threads)
    load_before = os.getloadavg()
    result: dict = {"name": args.name, "model": model_label(args.model), "torch": torch.__version__,
                    "threads": args.threads, "cpu": lscpu(), "after_rollout": dataclasses.asdict(p.rollout)}

    if args.steps:
        pool, _ = split_questions(load_train_records(QA_DIR, p.data.train_sets), p.rl)
        arms = {arm: rl_arm(p, args.model, arm) for arm in ARMS}
        rows: dict[str, list] = {arm: [] for arm in ARMS}
        same = total = 0
        for step in range(1, args.steps + 1):
            batch = step_questions(pool, p.rl, step)
            seqs = {}
            for arm in (ARMS if step % 2 else ARMS[::-1]):
                a = arms[arm]
                torch.manual_seed(step)
                start = time.perf_counter()
                with engine(arm):
                    sequences, advantages, weights, metrics, timings = rl_step(
                        a["generator"].weights(), tokenizer, retriever, batch, p.rl, rollout_config(p, arm), p.refiner, p.reward,
                        judge, step)
                t0 = time.perf_counter()
                with engine(arm):
                    update_policy(a["accelerator"], a["model"], a["reference"], a["optimizer"],
                                  step_learning_rates(p.rl, step), sequences, advantages, weights, p.rl, step)
                timings["update"] = time.perf_counter() - t0
                seqs[arm] = [list(s.token_ids) for s in sequences]
                rows[arm].append({"step": step, "seconds": round(time.perf_counter() - start, 2),
                                  **{k: round(v, 2) for k, v in timings.items()},
                                  "rows": len(sequences), "tokens": sum(len(s) for s in seqs[arm]),
                                  "reward": round(metrics["reward"], 4), "em": round(metrics["em"], 4)})
                print(f"[bench] rl step {step} {arm}: {rows[arm][-1]}", file=sys.stderr, flush=True)
            total += max(len(seqs["before"]), len(seqs["after"]))
            same += sum(x == y for x, y in zip(seqs["before"], seqs["after"]))
        mean = {arm: round(sum(r["seconds"] for r in rows[arm]) / len(rows[arm]), 2) for arm in ARMS}
        result["rl"] = {"precisions": {arm: precisions(p, arm) for arm in ARMS}, "steps": args.steps, "questions_per_step": p.rl.questions_per_step,
                        "group_size": p.rl.group_size, "rows": rows, "mean_seconds": mean,
                        "ratio_after_over_before": round(mean["after"] / mean["before"], 3),
                        "identical_update_rows": same, "update_rows": total}
        del arms

    if args.eval_questions:
        sets = {name: load_eval_set(QA_DIR, name, args.eval_questions) for name in p.data.test_sets}
        runs, timing = {}, {}
        for arm in ARMS:
            model = load_model(args.model, precisions(p, arm)["eval_dtype"], "cpu", inference=True)
            cfg = greedy(rollout_config(p, arm))
            played: list = []

            def captured(questions, cfg=cfg, played=played):
                out = rollout(model, tokenizer, retriever, questions, cfg)
                played.extend(out)
                return out

            start = time.perf_counter()
            with engine(arm):
                if arm == "after":
                    rows_by_set, _, _ = run_system(captured, sets, tokenizer, p.evaluate.chunk_size, arm)
                else:                                       # the old run_system: one set at a time
                    rows_by_set = {name: run_system(captured, {name: records}, tokenizer, p.evaluate.chunk_size,
                                                    f"{arm} {name}")[0][name] for name, records in sets.items()}
            seconds = time.perf_counter() - start
            n = sum(len(r) for r in sets.values())
            em = [r["em"] for name in sets for r in rows_by_set[name]]
            timing[arm] = {"dtype": precisions(p, arm)["eval_dtype"], "seconds": round(seconds, 2), "questions": n,
                           "questions_per_s": round(n / seconds, 4), "em": round(100 * sum(em) / len(em), 2)}
            runs[arm] = {"ids": [t.token_ids for t in played],
                         "predictions": [r["prediction"] for name in sets for r in rows_by_set[name]]}
            print(f"[bench] eval {arm}: {timing[arm]}", file=sys.stderr, flush=True)
        result["eval"] = {"questions_per_set": args.eval_questions, "timing": timing,
                          "speedup": round(timing["after"]["questions_per_s"] / timing["before"]["questions_per_s"], 3),
                          "identical_trajectories": sum(a == b for a, b in zip(runs["before"]["ids"], runs["after"]["ids"])),
                          "identical_predictions": sum(a == b for a, b in zip(runs["before"]["predictions"],
                                                                             runs["after"]["predictions"])),
                          "questions": len(runs["after"]["ids"])}
    result.update(loadavg_fields(load_before))
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    write_result(out, result)
    md = markdown_head(args.name, result, torch.__version__, args.threads)
    if "rl" in result:
        r = result["rl"]
        md += [f"Precisions: {r['precisions']}.", "",
               f"RL step ({r['questions_per_step']} questions x {r['group_size']}), mean of {r['steps']} steps: "
               f"before {r['mean_seconds']['before']} s, after {r['mean_seconds']['after']} s "
               f"(x{r['ratio_after_over_before']}); identical update rows {r['identical_update_rows']} of "
               f"{r['update_rows']}.", "", "| arm | step | seconds | rollout | refine | judge | update | rows | tokens | reward |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for arm in ARMS:
            for row in r["rows"][arm]:
                md.append(f"| {arm} | {row['step']} | {row['seconds']} | {row.get('rollout', '')} | "
                          f"{row.get('refine', '')} | {row.get('judge', '')} | {row['update']} | {row['rows']} | "
                          f"{row['tokens']} | {row['reward']} |")
        md.append("")
    if "eval" in result:
        e = result["eval"]
        md += [f"Agent evaluation, {e['questions']} questions: before {e['timing']['before']['questions_per_s']} q/s "
               f"({e['timing']['before']['dtype']}, EM {e['timing']['before']['em']}), after "
               f"{e['timing']['after']['questions_per_s']} q/s ({e['timing']['after']['dtype']}, EM "
               f"{e['timing']['after']['em']}) (x{e['speedup']}); identical trajectories "
               f"{e['identical_trajectories']} of {e['questions']}, identical predictions {e['identical_predictions']}."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
