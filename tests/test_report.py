"""The report stage (searchr2.report, searchr2.published, stages/report.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV
from searchr2.published import LADDER_7B, SEARCH_R1_PPO, SETS, TABLE2
from searchr2.report import (ladder_rung, paired_table, published_table, run_csv, run_table, system_rows,
                             write_report)

ROOT = Path(__file__).resolve().parents[1]


def _metrics(systems: dict[str, list[float | None]]) -> dict:
    out = {}
    for name, ems in systems.items():
        out[name] = {s: {"em": v, "n": 20} for s, v in zip(SETS, ems) if v is not None}
        out[name]["avg"] = {"em": 0.0}
    out["refiner"] = {"sft": {"n": 60, "exact": 0.5, "accept_reject": 0.5, "revise_rate": 0.0, "auc": 0.7125},
                      "base": {"n": 60, "exact": 0.1, "accept_reject": 0.5, "revise_rate": 1.0}}   # before AUC
    return out


def test_published_averages_match_their_cells_except_the_known_one():
    """Catches a mistyped cell: the published average is the mean of the seven sets, to rounding, in
    every row but IRCoT's, whose printed average (23.9) disagrees with its own cells (22.6)."""
    rows = [*TABLE2, SEARCH_R1_PPO, *LADDER_7B]
    assert [r.method for r in rows if r.avg_disagrees] == ["IRCoT"]
    assert "23.9 (cells: 22.6)" in published_table(TABLE2)


def test_rows_follow_the_pipeline_order_and_average_complete_rows():
    rows = system_rows(_metrics({"agent_rl": [10.0] * 7, "direct": [0.0] * 7, "agent_sft": [20.0, 40.0] + [30.0] * 5}))
    assert [r["system"] for r in rows] == ["direct", "agent_sft", "agent_rl"]
    assert rows[1]["avg"] == pytest.approx(30.0) and rows[1]["n"] == [20]


def test_a_missing_set_is_shown_and_never_averaged():
    rows = system_rows(_metrics({"agent_rl": [10.0, None, 30.0, 40.0, 50.0, 60.0, 70.0]}))
    assert rows[0]["em"][1] is None and rows[0]["avg"] is None and rows[0]["missing"] == ["triviaqa"]
    table = run_table(rows)
    assert "| – |" in table and "missing: triviaqa" in table
    assert run_csv(rows).splitlines()[1].endswith(",,triviaqa")


def _dvclive(run: Path, metrics: dict[str, list[float]]):
    root = run / "plots" / "metrics"
    root.mkdir(parents=True)
    for name, values in metrics.items():
        (root / f"{name}.tsv").write_text("timestamp\tstep\t" + name + "\n" +
                                          "".join(f"0\t{i}\t{v}\n" for i, v in enumerate(values, 1)))


def test_report_writes_tables_plots_and_labels(tmp_path):
    _dvclive(tmp_path / "rl", {"reward": [0.1, 0.3], "kl": [0.0, 0.001], "em": [0.1, 0.2], "other": [1, 2]})
    done = write_report(_metrics({"agent_sft": [20.0] * 7, "agent_rl": [25.0] * 6 + [None]}), tmp_path / "rl",
                        tmp_path / "report.md", tmp_path / "report", "embedded", "the embedded fictional world")
    text = (tmp_path / "report.md").read_text()
    assert done["incomplete"] == {"agent_rl": ["bamboogle"]} and done["rl_curves"] == ["reward", "em", "kl"]
    assert "the embedded fictional world" in text and "GRPO run (35.0)" in text and "43.1" in text
    assert "| agent, SFT warm-up | 20.0 |" in text
    assert "| base | 10.0 | 50.0 | 100.0 | – | 60 |\n| sft | 50.0 | 50.0 | 0.0 | 71.2 | 60 |" in text   # pipeline order
    for name in ("em.csv", "em_by_set.png", "rl_curves.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_report_without_rl_curves_says_so(tmp_path):
    done = write_report(_metrics({"agent_sft": [20.0] * 7}), tmp_path / "absent", tmp_path / "r.md",
                        tmp_path / "assets", "smoke", "tiny world")
    assert done["rl_curves"] == [] and "No RL curves" in (tmp_path / "r.md").read_text()
    assert not (tmp_path / "assets" / "rl_curves.png").exists()


def test_stage_names_a_broken_metrics_file(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "results" / "metrics.json").write_text('{"agent_sft": {"nq": ')
    proc = subprocess.run([sys.executable, "-m", "stages.report"], cwd=tmp_path, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "results/metrics.json" in proc.stderr and "not valid JSON" in proc.stderr
    (tmp_path / "results" / "metrics.json").unlink()
    proc = subprocess.run([sys.executable, "-m", "stages.report"], cwd=tmp_path, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "results/metrics.json: missing; run `dvc repro metrics`" in proc.stderr


@pytest.mark.parametrize("enabled, process, weight, turns, rung", [
    (False, False, 1.0, 4, "Search-R1"), (True, False, 0.0, 4, "+ Meta-Refiner"),
    (True, True, 0.0, 4, "+ Meta-Refiner + process reward"), (True, True, 1.0, 4, "Search-R2"),
    (True, False, 0.5, 4, "none (Search-R2 without the process reward: not a rung)"),
    (False, True, 1.0, 4, "none (Search-R1 with the process reward: not a rung)"),
    (False, False, 1.0, 0, "R1-base (RL, no search)"),
    (True, True, 1.0, 0, "none (no search with the Meta-Refiner or the process reward: not a rung)"),
])
def test_the_rl_run_is_named_by_its_rung_of_the_ladder(enabled, process, weight, turns, rung):
    assert ladder_rung(enabled, process, weight, turns) == rung


def test_report_names_paper_rows_intervals_and_paired_differences(tmp_path):
    metrics = _metrics({"direct": [0.0] * 7, "rag": [10.0] * 7})
    for name, scores in (("direct", "0" * 20), ("rag", "1" * 2 + "0" * 18)):
        for s in SETS:
            metrics[name][s].update(em_by_question=scores, questions_sha="same")
        metrics[name]["avg"]["em_ci95"] = [5.0, 15.0]
    write_report(metrics, None, tmp_path / "r.md", tmp_path / "a", "embedded", "world", "Search-R1", (500, 0))
    text = (tmp_path / "r.md").read_text()
    assert "| avg | 95% CI | paper row |" in text
    assert "| RAG (base model) | 10.0 |" in text and "| [5.0, 15.0] | RAG |" in text
    assert "| Direct (base model) |" in text and "| Direct inference |" in text
    assert "| RAG (base model) − Direct (base model) | +10.0 | [" in text and "| 14 | 0 |" in text
    metrics["rag"]["nq"]["questions_sha"] = "other"
    with pytest.raises(ValueError, match="not the same questions in nq"):
        paired_table(metrics, (("rag", "direct"),), (100, 0))
    assert paired_table(_metrics({"rag": [1.0] * 7}), (("rag", "direct"),), (100, 0)) == ""


def test_the_report_says_what_the_refiner_did_during_rl():
    from searchr2.report import refiner_in_rl

    curves = {"acceptance_rate": ([1.0, 2.0], [0.6, 0.8])}
    effect = {"n": 5, "before": 0.2, "after": 0.6, "diff": 0.4, "ci95": [0.1, 0.7], "better": 3, "worse": 1}
    text = refiner_in_rl(curves, {"revisions": effect})
    assert "accepted 70% of the trajectories on first review" in text and "per step: 60%, 80%" in text
    assert "revised 5 trajectories" in text and "0.200 before revision to 0.600 after (+0.400" in text
    assert "[+0.100, +0.700]" in text and "3 better, 1 worse" in text
    assert "revised no trajectory" in refiner_in_rl(curves, {"revisions": {"n": 0}})
    assert refiner_in_rl({}, {"steps": 4}) == ""          # a run without the refiner: nothing to say
