"""Stage `metrics`: the per-model evaluations merged into one table.

Reads results/eval/<model>/metrics.json and timing.json (stages evaluate@base, @sft, @rl) and
results/refiner/<model>.json (stages evaluate_refiner@base, @sft, @rl); writes
results/metrics.json (for each system of `evaluate.systems`: EM, F1 and cover-EM ×100 per set and
on average with 95% bootstrap intervals over questions, search and turn counts; `refiner.<model>`: the Meta-Refiner's accuracy), its headline
numbers in results/summary.json (EM per set and system, questions per set, refiner AUC and exact
accuracy: the DVC metric that `dvc exp show` displays) and results/eval_timing.json (seconds).
"""
from searchr2.evaluation import merge_model_results, summarize
from searchr2.io import write_json
from searchr2.params import load_params
from searchr2.paths import EVAL_DIR, METRICS_JSON, MODEL_NAMES, REFINER_EVAL_DIR, RESULTS, SUMMARY_JSON
from searchr2.stage import read_stage_json, run_stage


def main():
    p = load_params()
    where = {model: EVAL_DIR / model / "metrics.json" for model in MODEL_NAMES}
    parts = {model: read_stage_json(path, f"evaluate@{model}") for model, path in where.items()}
    timing = {model: read_stage_json(EVAL_DIR / model / "timing.json", f"evaluate@{model}") for model in MODEL_NAMES}
    refiner = {model: read_stage_json(REFINER_EVAL_DIR / f"{model}.json", f"evaluate_refiner@{model}")
               for model in MODEL_NAMES}
    metrics = merge_model_results(parts, p.evaluate.systems, where, refiner,
                                  (p.evaluate.bootstrap_samples, p.evaluate.bootstrap_seed))
    write_json(METRICS_JSON, {"profile": p.profile, "world": p.data.source == "world", **metrics})
    write_json(SUMMARY_JSON, summarize(metrics))
    write_json(RESULTS / "eval_timing.json", {s: t for model in MODEL_NAMES for s, t in timing[model].items()
                                              if s in p.evaluate.systems})


if __name__ == "__main__":
    run_stage("metrics", main)
