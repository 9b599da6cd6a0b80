"""The experiment table: `dvc exp show --json` shaped input to Markdown/CSV rows, seed groups, bad input."""
import csv
import io
import json
import itertools
import math

import pytest

from searchr2 import experiments as ex
from searchr2.published import SETS

_CLOCK = itertools.count()        # experiments are listed oldest first: the order they are made here
PARAMS = {"rl": {"seed": 0, "refiner_weight": 1.0, "lr": 1e-5}, "refiner": {"enabled": True},
          "evaluate": {"systems": ["agent_sft", "agent_rl"], "max_questions": 20}}


def _metrics(em, n=20, system="agent_rl", sets=SETS, searches=1.0):
    per_set = {s: {"em": v, "n": n, "f1": v, "searches": searches} for s, v in zip(sets, em)}
    return {system: {**per_set, "avg": {"em": sum(em) / len(em)}}, "refiner": {"sft": {"exact": 0.5}}}


def _rev(rev, params, metrics=None, name=None, error=None):
    files = {"results/metrics.json": {"data": metrics}} if metrics is not None else {}
    return {"rev": rev, "name": name, "error": error,
            "data": {"rev": rev, "timestamp": f"2026-11-24T20:{next(_CLOCK):02d}:00",
                     "params": {"params.yaml": {"data": params}}, "metrics": files}}


def _exp(rev, name, params, metrics=None, state="success"):
    return {"name": name, "executor": None if state is None else {"state": state}, "revs": [_rev(rev, params, metrics, name)]}


def _with(**over):
    p = json.loads(json.dumps(PARAMS))
    for key, value in over.items():
        section, name = key.split("__")
        p[section][name] = value
    return p


def _show(experiments, base_metrics=None):
    base = _rev("a" * 40, PARAMS, base_metrics or _metrics([40, 40, 60, 10, 20, 0, 0]), name="main")
    base["experiments"] = experiments
    return [_rev("workspace", PARAMS, _metrics([1] * 7)) | {"rev": "workspace"}, base]


def test_flatten_keeps_lists_and_dotted_keys():
    assert ex.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}


def test_rows_params_that_differ_and_unfinished_listed():
    show = _show([
        _exp("10" + "0" * 38, "search-r1", _with(refiner__enabled=False), _metrics([45, 45, 60, 15, 20, 0, 0])),
        _exp("20" + "0" * 38, "rw-0.5", _with(rl__refiner_weight=0.5), None, state="running"),
        _exp("30" + "0" * 38, "broken", _with(rl__lr=1.0), None, state="failed"),
    ])
    rows = ex.parse_exp_show(show)
    assert [r.name for r in rows] == ["workspace", "main@aaaaaaa", "search-r1", "rw-0.5", "broken"]
    shown, unfinished = ex.select(rows)
    assert [r.name for r in shown] == ["main@aaaaaaa", "search-r1"]          # workspace only on request
    assert [(r.name, r.state) for r in unfinished] == [("rw-0.5", "running"), ("broken", "failed")]
    result = ex.table(shown, "agent_rl")
    assert result["keys"] == ["refiner.enabled"]             # only what differs between the rows shown
    r1 = result["records"][1]
    assert r1["em"][:2] == [45, 45] and math.isclose(r1["avg"], 185 / 7) and r1["params"] == {"refiner.enabled": "false"}
    md = ex.to_markdown(result, "agent_rl", unfinished, "test")
    assert "| search-r1 | 45.0 | 45.0 | 60.0 | 15.0 | 20.0 | 0.0 | 0.0 | 26.4 | 20 | `false` |" in md
    assert "not shown, running: rw-0.5" in md and "not shown, failed: broken" in md
    out = list(csv.DictReader(io.StringIO(ex.to_csv(result))))
    assert out[1]["experiment"] == "search-r1" and out[1]["avg"] == "26.429" and out[1]["refiner.enabled"] == "false"


def test_only_orders_rows_and_names_unknown_or_unfinished():
    show = _show([_exp("10" + "0" * 38, "a", _with(rl__seed=1), _metrics([1] * 7)),
                  _exp("20" + "0" * 38, "b", _with(rl__seed=2), None, state="queued")])
    rows = ex.parse_exp_show(show)
    shown, unfinished = ex.select(rows, only=["a", "main@aaaaaaa"])
    assert [r.name for r in shown] == ["a", "main@aaaaaaa"] and unfinished == []   # b was not asked for
    assert [r.name for r in ex.select(rows, only=["main", "a"])[0]] == ["main@aaaaaaa", "a"]   # branch alone
    assert [r.name for r in ex.select(rows, exclude=["main"])[0]] == ["a"]
    with pytest.raises(ValueError, match=r"no finished experiment named b \(queued\), zz"):
        ex.select(rows, only=["b", "zz"])


def test_missing_metrics_system_and_sets_are_shown_never_averaged():
    partial = _metrics([50, 50, 50], sets=SETS[:3])
    show = _show([
        _exp("10" + "0" * 38, "no-metrics", _with(rl__seed=1), None),
        _exp("20" + "0" * 38, "sft-only", _with(rl__seed=2), _metrics([9] * 7, system="agent_sft")),
        _exp("30" + "0" * 38, "three-sets", _with(rl__seed=3), partial),
        _exp("40" + "0" * 38, "more-questions", _with(evaluate__max_questions=100), _metrics([30] * 7, n=100)),
    ])
    shown, _ = ex.select(ex.parse_exp_show(show))
    result = ex.table(shown, "agent_rl")
    recs = {r["experiment"]: r for r in result["records"]}
    assert recs["no-metrics"]["avg"] is None and "no results/metrics.json" in recs["no-metrics"]["problem"]
    assert recs["sft-only"]["avg"] is None and "agent_rl not evaluated (has: agent_sft)" in recs["sft-only"]["problem"]
    assert recs["three-sets"]["em"][:3] == [50, 50, 50] and recs["three-sets"]["avg"] is None
    assert "missing sets: hotpotqa" in recs["three-sets"]["problem"]
    md = ex.to_markdown(result, "agent_rl", [], "test")
    assert "| three-sets | 50.0 | 50.0 | 50.0 | – | – | – | – | – | 20 |" in md
    assert "different numbers of questions per set (20, 100)" in md


def test_seed_groups_mean_and_sample_std():
    r1 = _with(refiner__enabled=False)
    show = _show([
        _exp("10" + "0" * 38, "search-r1", r1, _metrics([40, 40, 40, 10, 20, 0, 0])),
        _exp("11" + "0" * 38, "search-r1-seed1", {**r1, "rl": {**r1["rl"], "seed": 1}}, _metrics([50, 40, 40, 10, 20, 0, 0])),
        _exp("12" + "0" * 38, "search-r1-seed2", {**r1, "rl": {**r1["rl"], "seed": 2}}, _metrics([60, 40, 40, 10, 20, 0, 0])),
        _exp("20" + "0" * 38, "r2-seed1", _with(rl__seed=1), _metrics([30, 40, 60, 10, 20, 0, 0])),
    ])
    shown, _ = ex.select(ex.parse_exp_show(show))
    result = ex.aggregate(shown, "agent_rl", over=("rl.seed",))
    assert result["keys"] == ["refiner.enabled"]
    groups = {r["experiment"]: r for r in result["records"]}
    assert set(groups) == {"main@aaaaaaa (+1)", "search-r1 (+2)"}
    g = groups["search-r1 (+2)"]
    assert g["seeds"] == ["0", "1", "2"] and g["members"] == ["search-r1", "search-r1-seed1", "search-r1-seed2"]
    assert g["em"][0] == 50 and math.isclose(g["std"][0], 10.0) and g["std"][1] == 0.0
    assert math.isclose(g["avg"], (150 / 7 + 160 / 7 + 170 / 7) / 3) and math.isclose(g["avg_std"], 10 / 7)
    md = ex.to_markdown(result, "agent_rl", [], "test")
    assert "| search-r1 (+2) | 0,1,2 | 50.0 ± 10.0 | 40.0 ± 0.0 |" in md
    assert "search-r1 (+2) = search-r1, search-r1-seed1, search-r1-seed2" in md
    out = list(csv.DictReader(io.StringIO(ex.to_csv(result))))
    assert {r["experiment"]: r["nq_std"] for r in out}["search-r1 (+2)"] == "10"


def test_seed_group_names_members_without_metrics_and_never_pools_different_n():
    show = _show([
        _exp("10" + "0" * 38, "s1", _with(rl__seed=1), None),
        _exp("20" + "0" * 38, "s2", _with(rl__seed=2), _metrics([10] * 7, n=50)),
        _exp("30" + "0" * 38, "s3", _with(rl__seed=3), _metrics([40, 40, 60], sets=SETS[:3])),
    ])
    shown, _ = ex.select(ex.parse_exp_show(show))
    groups = ex.aggregate(shown, "agent_rl", over=("rl.seed",))["records"]
    by_members = {tuple(g["members"]): g for g in groups}
    assert ("s2",) in by_members                           # 50 questions per set: its own group
    base = by_members[("main@aaaaaaa", "s1", "s3")]
    assert base["seeds"] == ["0", "3"] and "s1: no results/metrics.json" in base["problem"]
    assert base["em"][0] == 40.0 and base["em"][3] is None and base["avg"] is None
    assert "missing sets: hotpotqa, 2wikimultihopqa, musique, bamboogle" in base["problem"]


def test_ignored_params_neither_columns_nor_group_keys():
    show = _show([_exp("10" + "0" * 38, "only-rl", _with(evaluate__systems=["agent_rl"], rl__seed=1),
                       _metrics([20] * 7))])
    shown, _ = ex.select(ex.parse_exp_show(show))
    assert ex.table(shown, "agent_rl")["keys"] == ["rl.seed", "evaluate.systems"]
    assert ex.table(shown, "agent_rl", ignore=("evaluate.systems",))["keys"] == ["rl.seed"]
    groups = ex.aggregate(shown, "agent_rl", over=("rl.seed",), ignore=("evaluate.systems",))["records"]
    assert len(groups) == 1 and groups[0]["members"] == ["main@aaaaaaa", "only-rl"]


def test_main_writes_files_and_rejects_bad_input(tmp_path, capsys):
    src = tmp_path / "show.json"
    src.write_text(json.dumps(_show([_exp("10" + "0" * 38, "x", _with(rl__seed=1), _metrics([10] * 7))])))
    md, out_csv, png = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.png"
    assert ex.main(["--json", str(src), "--rename", "main=search-r2", "--md", str(md),
                    "--csv", str(out_csv), "--png", str(png)]) == 0
    assert "| search-r2 | 40.0 |" in md.read_text() and png.stat().st_size > 0
    assert out_csv.read_text().splitlines()[0].startswith("experiment,rev,nq,")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"rev": "workspace"},\n oops]')
    assert ex.main(["--json", str(bad)]) == 2
    assert f"{bad}: line 2: not JSON" in capsys.readouterr().err
    bad.write_text('{"rev": "x"}')
    assert ex.main(["--json", str(bad)]) == 2
    assert "expected a JSON list" in capsys.readouterr().err
    assert ex.main(["--json", str(src), "--rename", "nonsense"]) == 2
    assert ex.main(["--json", str(src), "--only", "nope"]) == 2


def test_also_columns_mean_over_sets_and_seeds():
    show = _show([_exp("10" + "0" * 38, "s1", _with(rl__seed=1), _metrics([20] * 7, searches=2.0)),
                  _exp("20" + "0" * 38, "lr", _with(rl__lr=1.0), _metrics([20] * 7, searches=3.0)),
                  _exp("30" + "0" * 38, "old", _with(rl__lr=2.0), {"agent_rl": {s: {"em": 1, "n": 20} for s in SETS}})])
    shown, _ = ex.select(ex.parse_exp_show(show))
    result = ex.table(shown, "agent_rl", also=("searches",))
    assert [r["also"]["searches"] for r in result["records"]] == [1.0, 2.0, 3.0, None]   # "old" lacks the field
    assert "| avg | searches | n |" in ex.to_markdown(result, "agent_rl", [], "t")
    groups = {g["experiment"]: g for g in ex.aggregate(shown, "agent_rl", ("rl.seed",), also=("searches",))["records"]}
    assert groups["main@aaaaaaa (+1)"]["also"]["searches"] == 1.5
    assert math.isclose(groups["main@aaaaaaa (+1)"]["also_std"]["searches"], math.sqrt(0.5))
    assert "searches_std" in ex.to_csv(ex.aggregate(shown, "agent_rl", ("rl.seed",), also=("searches",)))
