"""Stage `report`: results/report.md, the paper-style table of this run beside the published rows.

Reads results/metrics.json (stage metrics), the rl stage's summary results/rl.json and its dvclive
curves in results/rl/; writes
results/report.md, results/report/em.csv, results/report/em_by_set.png and
results/report/rl_curves.png. Cheap (seconds): it reruns whenever the metrics do.
"""
from searchr2.params import load_params
from searchr2.paths import METRICS_JSON, RESULTS
from searchr2.report import ladder_rung, write_report
from searchr2.stage import read_stage_json, run_stage


def corpus_label(p) -> str:
    """What the numbers were measured on, in words, for the table's caption."""
    where = (f"the embedded fictional world ({p.world.n_entities} entities), not the real benchmarks"
             if p.data.source == "world" else f"{p.data.source} data, corpus {p.data.corpus_path or 'wiki-18'}")
    return f"{where}; {p.retrieval.method} top-{p.rollout.top_k}"


def main():
    p = load_params()
    metrics = read_stage_json(METRICS_JSON, "metrics")
    rung = ladder_rung(p.refiner.enabled, p.reward.process, p.rl.refiner_weight, p.rollout.max_turns)
    done = write_report(metrics, RESULTS / "rl", RESULTS / "report.md", RESULTS / "report", p.profile,
                        corpus_label(p), rung, (p.evaluate.bootstrap_samples, p.evaluate.bootstrap_seed),
                        read_stage_json(RESULTS / "rl.json", "rl"))
    for system, missing in done["incomplete"].items():
        print(f"[report] {system}: no EM for {', '.join(missing)} (shown as '–', no average)")


if __name__ == "__main__":
    run_stage("report", main)
