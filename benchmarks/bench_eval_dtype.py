"""The agent evaluation in float32 and in bfloat16, in one run: speed, and how much the answers change.

    python benchmarks/bench_eval_dtype.py                              # data/models/sft, 20 questions a set
    python benchmarks/bench_eval_dtype.py --questions 50 --model data/models/rl --name eval-dtype-rl

``evaluate.dtype`` is a param; this measures what choosing ``bfloat16`` on a CPU buys and costs. Each
arm loads the model in its dtype and answers the first ``--questions`` questions of every eval set
with the evaluate stage's code (:func:`searchr2.evaluation.run_system`, greedy, ``params.yaml``'s
rollout settings); the arms run one after the other, ``--repeats`` times in alternating order.
Compared: questions/s, EM per arm with its 95% interval, the paired difference of the averages
(:mod:`searchr2.stats`), and how many predictions and trajectories (token ids) are identical. On
CPUs with AMX or AVX512-BF16 the bf16 matmuls run on those units; elsewhere torch converts and may be
slower than float32: the result file records ``lscpu``'s flags.

Results: ``benchmarks/results/<name>.json`` and ``.md``.
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/sft")
    parser.add_argument("--questions", type=int, default=20, help="first N questions of every eval set")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="the arms; the first is the "
                        "reference the others are compared with")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per arm (answers are kept from the first)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="eval-dtype", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args(argv)

    import torch

    from searchr2.data import load_eval_set
    from searchr2.evaluation import greedy, run_system, with_intervals
    from searchr2.models import load_model, load_tokenizer
    from searchr2.params import load_params
    from searchr2.paths import INDEX_DIR, QA_DIR
    from searchr2.retrieval import load_retriever
    from searchr2.rollout import rollout
    from searchr2.stats import decode_scores, paired_difference

    torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    p = load_params()
    cfg = greedy(p.rollout)
    sets = {name: load_eval_set(QA_DIR, name, args.questions) for name in p.data.test_sets}
    tokenizer = load_tokenizer(args.model)
    retriever = load_retriever(p.retrieval.method, INDEX_DIR, p.index)
    bootstrap = (p.evaluate.bootstrap_samples, p.evaluate.bootstrap_seed)
    load_before = os.getloadavg()

    runs: dict[str, dict] = {}
    seconds: dict[str, list[float]] = {d: [] for d in args.dtypes}
    for repeat in range(args.repeats):
        order = args.dtypes if repeat % 2 == 0 else list(reversed(args.dtypes))
        for dtype in order:
            model = load_model(args.model, dtype, "cpu").eval()
            played: list = []

            def answer(questions, model=model, played=played):
                out = rollout(model, tokenizer, retriever, questions, cfg)
                played.extend(out)
                return out

            start = time.perf_counter()
            rows, summary, _ = run_system(answer, sets, tokenizer, p.evaluate.chunk_size, f"{dtype} #{repeat + 1}")
            seconds[dtype].append(time.perf_counter() - start)
            print(f"[bench] {dtype} run {repeat + 1}: {seconds[dtype][-1]:.1f} s", file=sys.stderr, flush=True)
            if dtype not in runs:
                runs[dtype] = {"summary": with_intervals(summary, *bootstrap), "ids": [t.token_ids for t in played],
                               "predictions": [r["prediction"] for name in sets for r in rows[name]],
                               "generated": sum(r["generated_tokens"] for name in sets for r in rows[name])}
            del model

    n = sum(len(r) for r in sets.values())
    ref = args.dtypes[0]

    def scores(dtype):
        return {k: decode_scores(v["em_by_question"]) for k, v in runs[dtype]["summary"].items() if k != "avg"}

    arms = {}
    for dtype in args.dtypes:
        best = min(seconds[dtype])
        s = runs[dtype]["summary"]
        arms[dtype] = {"seconds": [round(x, 2) for x in seconds[dtype]], "questions_per_s": round(n / best, 4),
                       "generated_tokens": runs[dtype]["generated"], "em_avg": s["avg"]["em"],
                       "em_ci95": s["avg"]["em_ci95"], "em": {k: v["em"] for k, v in s.items() if k != "avg"}}
        if dtype != ref:
            arms[dtype].update(
                speedup=round(arms[dtype]["questions_per_s"] / arms[ref]["questions_per_s"], 3),
                paired_vs_reference=paired_difference(scores(dtype), scores(ref), *bootstrap),
                identical_predictions=sum(a == b for a, b in zip(runs[dtype]["predictions"], runs[ref]["predictions"])),
                identical_trajectories=sum(a == b for a, b in zip(runs[dtype]["ids"], runs[ref]["ids"])))
    result = {"model": model_label(args.model), "questions_per_set": args.questions, "questions": n,
              "threads": args.threads, "torch": torch.__version__, "cpu": lscpu(), "repeats": args.repeats,
              "reference": ref, "arms": arms, **loadavg_fields(load_before)}
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    write_result(out, result)
    md = [*markdown_head(args.name, result, torch.__version__, args.threads,
                         f"model {result['model']}; {n} questions ({args.questions} per set)"),
          "| dtype | seconds (each run) | q/s (best) | x ref | avg EM | 95% CI | Δ vs ref (paired 95% CI) | "
          "same predictions | same trajectories |", "|---|---|---:|---:|---:|---|---|---:|---:|"]
    for dtype, a in arms.items():
        d = a.get("paired_vs_reference")
        md.append(f"| {dtype} | {', '.join(map(str, a['seconds']))} | {a['questions_per_s']} | {a.get('speedup', 1.0)} | "
                  f"{a['em_avg']} | {a['em_ci95']} | "
                  + (f"{d['diff']:+.2f} {d['ci95']}" if d else "–") + " | "
                  + (f"{a['identical_predictions']} of {n}" if d else "–") + " | "
                  + (f"{a['identical_trajectories']} of {n}" if d else "–") + " |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
