"""Does the Meta-Refiner's cut-and-regenerate raise the reward? Measured on more trajectories than one RL run revises.

    python benchmarks/bench_revision.py --questions 100          # data/models/sft, the params' rl/rollout/refiner

Runs the rl stage's own step (:func:`searchr2.rl.rl_step`: sampled rollouts of ``rl.group_size`` per
question with live search, the refiner's review, cut and regeneration, the hybrid reward) without the
update, on ``--questions`` questions of the RL training pool (``--batch`` per step), from one model.
Every revised trajectory is recorded as the stage records it (``results/rl/revisions.jsonl``'s fields),
and the summary pairs its reward before and after revising (:func:`searchr2.rl.revision_effect`: mean
difference, 95% bootstrap interval over the revisions). It also splits the revisions by whether another
trajectory of the same question answered right (``group_em`` without the revised one): a question the
Actor can answer at all against one it cannot, which is what a regeneration can hope for.
Results: ``benchmarks/results/<name>.json`` (with every revision) and ``.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_speed import rl_setting  # noqa: E402
from benchmarks.run_info import loadavg_fields, lscpu, markdown_head, model_label, write_result  # noqa: E402


def others_answered(revision: dict, group_size: int) -> bool:
    """Whether a trajectory of the revised one's group other than itself answered right (``group_em`` counts
    the group's final trajectories, the revised one included)."""
    right = round(revision["group_em"] * group_size)
    return right - (revision["reward_after"] > 0) > 0


def summarize(revisions: list[dict], group_size: int, seed: int) -> dict:
    """The paired effect over all revisions, and over those whose question another trajectory answered / none did."""
    from searchr2.rl import revision_effect

    answerable = [r for r in revisions if others_answered(r, group_size)]
    hopeless = [r for r in revisions if not others_answered(r, group_size)]
    return {"all": revision_effect(revisions, seed), "others_answered": revision_effect(answerable, seed),
            "none_answered": revision_effect(hopeless, seed)}


def interval(effect: dict) -> str:
    """A :func:`searchr2.rl.revision_effect`'s 95% interval as the tables print it ("–" below 2 revisions)."""
    ci = effect["ci95"]
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "–"


def what_if(reviews: list[dict], cfg, margins: list[float], seed: int) -> list[dict]:
    """For each margin at or above the run's own (``cfg.margin``): the first-review acceptance rate it gives, how
    many of the revised trajectories had a reward before, and the paired effect over the revisions it makes.

    Only for ``revise_score: total``, where the rule depends on P(0) alone (revise when 1 - P(0) >= P(0) + margin),
    so a stricter margin revises a subset of what this run revised."""
    from searchr2.refiner import revise_decision
    from searchr2.rl import revision_effect

    if cfg.revise_score != "total" or not reviews:
        return []
    rows = []
    for margin in sorted({m for m in margins if m >= cfg.margin}, reverse=True):
        rule = dataclasses.replace(cfg, margin=margin)
        chosen = [r for r in reviews if r["revised"] and revise_decision([r["p_accept"], 1 - r["p_accept"]], rule)]
        rows.append({"margin": margin, "acceptance_rate": round(1 - len(chosen) / len(reviews), 4),
                     "rewarded_revised": sum(r["reward_before"] > 0 for r in chosen),
                     "effect": revision_effect(chosen, seed)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/sft")
    parser.add_argument("--questions", type=int, default=100, help="training questions (from the RL pool)")
    parser.add_argument("--batch", type=int, default=20, help="questions per step (the stage's rl.questions_per_step)")
    parser.add_argument("--max-revisions", type=int, default=None,
                        help="revision rounds per trajectory (refiner.max_revisions; default: the params'). The paper "
                             "sweeps 1-4")
    parser.add_argument("--margin", type=float, default=None,
                        help="refiner.margin for this run (default: the params'); the what-if table covers every "
                             "--what-if margin at or above it")
    parser.add_argument("--what-if", type=float, nargs="*", default=[0.0, -0.2, -0.4, -0.6],
                        help="margins to read off this run's reviews (revise_score total only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="revision", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args()
    if args.questions < 1 or args.batch < 1 or (args.max_revisions is not None and args.max_revisions < 1):
        parser.error("--questions, --batch and --max-revisions must be >= 1")

    import torch

    from searchr2.data import load_train_records
    from searchr2.models import load_model, resolve_dtype
    from searchr2.paths import QA_DIR
    from searchr2.rl import rl_step, split_questions

    p, tokenizer, retriever, judge = rl_setting(args.model, args.threads)
    if not p.refiner.enabled:
        raise SystemExit("refiner.enabled is false in params.yaml: there is nothing to revise")
    refiner_cfg = p.refiner
    if args.max_revisions is not None:
        refiner_cfg = dataclasses.replace(refiner_cfg, max_revisions=args.max_revisions)
    if args.margin is not None:
        refiner_cfg = dataclasses.replace(refiner_cfg, margin=args.margin)
    pool, _ = split_questions(load_train_records(QA_DIR, p.data.train_sets), p.rl)
    questions = random.Random(f"{p.rl.seed}:bench-revision").sample(pool, min(args.questions, len(pool)))
    dtype = resolve_dtype(p.rl.generate_dtype, "cpu")
    lm = load_model(args.model, dtype, "cpu", inference=True)       # what the rl stage generates and scores with
    load_before = os.getloadavg()
    revisions: list[dict] = []
    reviews: list[dict] = []
    steps, start = [], time.perf_counter()
    for k, first in enumerate(range(0, len(questions), args.batch)):
        batch = questions[first:first + args.batch]
        t0 = time.perf_counter()
        _, _, _, metrics, timings = rl_step(lm, tokenizer, retriever, batch, p.rl, p.rollout, refiner_cfg, p.reward,
                                            judge, step=1000 + k, revisions=revisions, reviews=reviews)
        steps.append({"questions": len(batch), "trajectories": len(batch) * p.rl.group_size,
                      "acceptance_rate": round(metrics["acceptance_rate"], 4), "em": round(metrics["em"], 4),
                      "reward": round(metrics["reward"], 4), "seconds": round(time.perf_counter() - t0, 1),
                      **{f"time_{name}": round(v, 1) for name, v in timings.items()}})
        print(f"[bench] step {k + 1}: {steps[-1]}; revisions so far {len(revisions)}", file=sys.stderr, flush=True)
    total = sum(s["trajectories"] for s in steps)
    accepted = sum(s["acceptance_rate"] * s["trajectories"] for s in steps)
    result = {"name": args.name, "model": model_label(args.model), "dtype": dtype, "torch": torch.__version__,
              "threads": args.threads, "cpu": lscpu(), "questions": len(questions), "group_size": p.rl.group_size,
              "max_revisions": refiner_cfg.max_revisions, "margin": refiner_cfg.margin,
              "trajectories": total, "acceptance_rate": round(accepted / total, 4),
              "em": round(sum(s["em"] * s["trajectories"] for s in steps) / total, 4),
              "seconds": round(time.perf_counter() - start, 1), **loadavg_fields(load_before),
              "effect": summarize(revisions, p.rl.group_size, p.rl.seed), "steps": steps,
              "what_if": what_if(reviews, refiner_cfg, args.what_if, p.rl.seed), "revisions": revisions,
              "reviews": reviews}
    out = ROOT / "benchmarks" / "results"
    write_result(out / f"{args.name}.json", result)
    lines = markdown_head(f"Revisions by the Meta-Refiner ({args.name})", result, torch.__version__, args.threads,
                          f"model {result['model']} in {dtype}")
    lines += [f"{len(questions)} training questions x {p.rl.group_size} sampled trajectories = {total}; up to "
              f"{refiner_cfg.max_revisions} revision round(s) a trajectory; first review "
              f"accepted {100 * result['acceptance_rate']:.1f}%; EM of the final trajectories "
              f"{100 * result['em']:.1f}%; {result['seconds']} s.", "",
              "| revised trajectories | n | reward before | after | after - before [95% CI] | better | worse |",
              "|---|---:|---:|---:|---|---:|---:|"]
    labels = {"all": "all", "others_answered": "another of the group answered right",
              "none_answered": "no other of the group answered right"}
    for key, label in labels.items():
        e = result["effect"][key]
        if not e["n"]:
            lines.append(f"| {label} | 0 | – | – | – | 0 | 0 |")
            continue
        lines.append(f"| {label} | {e['n']} | {e['before']:.3f} | {e['after']:.3f} | {e['diff']:+.3f} {interval(e)} | "
                     f"{e['better']} | {e['worse']} |")
    if result["what_if"]:
        lines += ["", "What a stricter margin would have revised, read off this run's first reviews (a revision's "
                  "outcome is this run's; the cut is drawn from the same distribution either way):", "",
                  "| margin | accepted | revised | of them rewarded before | after - before [95% CI] | better | "
                  "worse |", "|---:|---:|---:|---:|---|---:|---:|"]
        for row in result["what_if"]:
            e = row["effect"]
            ci = f"{e['diff']:+.3f} {interval(e)}" if e["ci95"] else "–"
            lines.append(f"| {row['margin']:+.2f} | {100 * row['acceptance_rate']:.1f}% | {e['n']} | "
                         f"{row['rewarded_revised']} | {ci} | {e['better']} | {e['worse']} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
