"""Stage `report`: results/report.md, the paper-style table of this run beside the published rows.

Reads results/metrics.json (stage evaluate) and the rl stage's dvclive curves in results/rl/; writes
results/report.md, results/report/em.csv, results/report/em_by_set.png and
results/report/rl_curves.png. Cheap (seconds): it reruns whenever evaluate does.
"""
import json

from searchr2.io import InputError
from searchr2.params import load_params
from searchr2.report import write_report
from searchr2.stage import RESULTS, run_stage

METRICS = RESULTS / "metrics.json"


def corpus_label(p) -> str:
    """What the numbers were measured on, in words, for the table's caption."""
    where = (f"the embedded fictional world ({p.world.n_entities} entities), not the real benchmarks"
             if p.data.source == "world" else f"{p.data.source} data, corpus {p.data.corpus_path or 'wiki-18'}")
    return f"{where}; {p.retrieval.method} top-{p.rollout.top_k}"


def main():
    p = load_params()
    if not METRICS.exists():
        raise FileNotFoundError(f"{METRICS}: no metrics; run the `evaluate` stage first")
    try:
        metrics = json.loads(METRICS.read_text())
    except json.JSONDecodeError as e:
        raise InputError(METRICS, f"not valid JSON: {e.msg}", line=e.lineno) from None
    done = write_report(metrics, RESULTS / "rl", RESULTS / "report.md", RESULTS / "report", p.profile,
                        corpus_label(p))
    for system, missing in done["incomplete"].items():
        print(f"[report] {system}: no EM for {', '.join(missing)} (shown as '–', no average)")


if __name__ == "__main__":
    run_stage("report", main)
