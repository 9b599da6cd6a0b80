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


def test_stage_changes_tell_stale_stages_from_absent_files():
    status = {
        "world": [{"changed outs": {"data/qa": "not in cache", "data/corpus": "not in cache"}}],
        "model": [{"changed deps": {"data/corpus": "deleted"}}, {"changed outs": {"data/models/base": "deleted"}}],
        "rl": [{"changed deps": {"params.yaml": {"rl.lr": "modified"}, "data/corpus": "deleted"}}],
        "sft": [{"changed deps": {"searchr2/sft.py": "modified"}}],
        "report": ["changed command"],
    }
    stale, absent = ex.stage_changes(status)
    assert stale == {"rl": ["params.yaml:rl.lr modified"], "sft": ["searchr2/sft.py modified"],
                     "report": ["changed command"]}
    assert absent == {"world": ["data/qa not in cache", "data/corpus not in cache"],
                      "model": ["data/corpus deleted", "data/models/base deleted"]}
    assert ex.stage_changes({}) == ({}, {})


def test_workspace_row_says_when_its_stages_are_out_of_date():
    rows = ex.parse_exp_show(_show([]))
    ws = next(r for r in rows if r.kind == "workspace")
    shown, _ = ex.select(rows, workspace=True)
    ws.status = {}                                                      # dvc status: all up to date
    rec = ex.table(shown, "agent_rl")["records"][0]
    assert rec["stale"] == [] and rec["status_note"] == ""
    ws.status = {"rl": [{"changed deps": {"params.yaml": {"rl.lr": "modified"}}}],
                 "world": [{"changed outs": {"data/qa": "not in cache"}}]}
    result = ex.table(shown, "agent_rl")
    md = ex.to_markdown(result, "agent_rl", [], "test")
    assert "| workspace (stale: rl) | 1.0 |" in md and "| main@aaaaaaa | 40.0 |" in md
    assert "stale: stages not up to date (rl: params.yaml:rl.lr modified)" in md
    assert "files of stages world are absent" in md
    out = {r["experiment"]: r for r in csv.DictReader(io.StringIO(ex.to_csv(result)))}
    assert out["workspace"]["stale"] == "rl" and out["main@aaaaaaa"]["stale"] == ""
    groups = ex.aggregate(shown, "agent_rl", over=("rl.seed",))
    assert groups["records"][0]["stale"] == ["rl"] and "workspace: stale" in groups["records"][0]["status_note"]
    assert list(csv.DictReader(io.StringIO(ex.to_csv(groups))))[0]["stale"] == "rl"
    ws.status, ws.status_error = None, "read from a file"                # not checked: said, not hidden
    rec = ex.table(shown, "agent_rl")["records"][0]
    assert rec["stale"] is None and "not checked (read from a file)" in rec["status_note"]
    assert list(csv.DictReader(io.StringIO(ex.to_csv(ex.table(shown, "agent_rl")))))[0]["stale"] == "unchecked"


def test_summary_metrics_make_the_table_and_also_reads_the_full_file():
    """Runs that declare only results/summary.json (EM and questions per set) as their DVC metric."""
    summary = {"em": {"agent_rl": {**{s: 30.0 for s in SETS}, "avg": 30.0}, "direct": {"nq": 5.0}},
               "questions": {s: 20 for s in SETS}, "refiner": {"rl": {"exact": 0.5}}}
    assert ex.from_summary(summary)["agent_rl"]["nq"] == {"em": 30.0, "n": 20}
    entry = _rev("b" * 40, _with(rl__seed=1), name="only-summary")
    entry["data"]["metrics"] = {"results/summary.json": {"data": summary}}
    show = _show([{"name": "only-summary", "executor": {"state": "success"}, "revs": [entry]}])
    shown, _ = ex.select(ex.parse_exp_show(show))
    row = next(r for r in shown if r.name == "only-summary")
    assert not row.full
    rec = ex.table(shown, "agent_rl", also=("searches",))["records"][1]
    assert rec["em"] == [30.0] * 7 and rec["avg"] == 30.0 and rec["n"] == [20] and rec["also"]["searches"] is None


def test_main_marks_a_stale_workspace_of_a_real_dvc_repo(tmp_path, monkeypatch, capsys):
    """A DVC repo laid out as the project's: one stage writing results/metrics.json (every score, in git)
    and results/summary.json (the DVC metric). Up to date, the workspace row is plain; after a param
    changes (no `dvc repro`), the row keeps the old numbers and is marked stale, naming the stage."""
    from conftest import ENV, run

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("rl:\n  seed: 0\n")
    (repo / "make.py").write_text(
        "import json, os, yaml\n"
        "seed = yaml.safe_load(open('params.yaml'))['rl']['seed']\n"
        f"sets = {list(SETS)!r}\n"
        "em = 10.0 + seed\n"
        "os.makedirs('results', exist_ok=True)\n"
        "full = {s: {'em': em, 'n': 5, 'searches': 2.0} for s in sets}\n"
        "json.dump({'agent_rl': {**full, 'avg': {'em': em}}}, open('results/metrics.json', 'w'))\n"
        "json.dump({'em': {'agent_rl': {**{s: em for s in sets}, 'avg': em}}, 'questions': {s: 5 for s in sets}},\n"
        "          open('results/summary.json', 'w'))\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  score:\n    cmd: python make.py\n    deps: [make.py]\n    params: [rl.seed]\n"
        "    outs:\n      - results/metrics.json:\n          cache: false\n"
        "    metrics:\n      - results/summary.json:\n          cache: false\n")
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "repro", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "scored"], repo)
    for key in ("DVC_NO_ANALYTICS", "DVC_STUDIO_OFFLINE", "ITERATIVE_DO_NOT_TRACK", "PATH"):
        monkeypatch.setenv(key, ENV[key])
    monkeypatch.chdir(repo)

    def table_rows():
        assert ex.main(["--workspace", "--also", "searches", "--csv", "exps.csv"]) == 0
        return {r["experiment"]: r for r in csv.DictReader(open("exps.csv"))}

    rows = table_rows()
    workspace, baseline = rows.pop("workspace"), next(iter(rows.values()))
    assert workspace["avg"] == "10" and workspace["n"] == "5" and workspace["stale"] == ""
    assert workspace["searches"] == baseline["searches"] == "2"     # the full file: the workspace's and git's
    assert "stale" not in capsys.readouterr().out
    # the export embeds git's full file, so a folder without the repository makes the same table
    assert ex.main(["--save-json", str(tmp_path / "saved.json")]) == 0
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert saved[1]["data"]["metrics"]["results/metrics.json"]["data"]["agent_rl"]["nq"]["searches"] == 2.0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert ex.main(["--json", str(tmp_path / "saved.json"), "--also", "searches", "--csv", "exps.csv"]) == 0
    assert [r["searches"] for r in csv.DictReader(open("exps.csv"))] == ["2"]
    monkeypatch.chdir(repo)
    (repo / "params.yaml").write_text("rl:\n  seed: 3\n")                  # changed, not reproduced
    workspace = table_rows()["workspace"]
    assert workspace["avg"] == "10" and workspace["stale"] == "score"
    out = capsys.readouterr().out
    assert "| workspace (stale: score) | 10.0 |" in out and "score: params.yaml:rl.seed modified" in out


def _scored(em_strings: dict, system="agent_rl", sha="q"):
    """Metrics of ``system`` with per-question scores (one 0/1 string per set) as stage metrics writes them."""
    per_set = {s: {"em": 100 * t.count("1") / len(t), "n": len(t), "em_by_question": t, "questions_sha": f"{sha}{s}"}
               for s, t in em_strings.items()}
    avg = sum(v["em"] for v in per_set.values()) / len(per_set)
    return {system: {**per_set, "avg": {"em": avg}}}


def test_paired_difference_between_experiments_and_between_systems(tmp_path, capsys):
    strong = {s: "1" * 12 + "0" * 8 for s in SETS}
    weak = {s: "1" * 8 + "0" * 12 for s in SETS}
    both = {**_scored(strong), **_scored(weak, "agent_sft")}
    src = tmp_path / "show.json"
    src.write_text(json.dumps(_show([_exp("10" + "0" * 38, "weak", _with(rl__seed=1), _scored(weak))],
                                    base_metrics=both)))
    assert ex.main(["--json", str(src), "--paired", "main", "weak", "--paired", "main:agent_rl",
                    "main:agent_sft"]) == 0
    out = capsys.readouterr().out
    assert "Paired differences of average EM (A − B" in out
    assert "| main@aaaaaaa: agent, after RL | weak: agent, after RL | +20.0 | [" in out
    assert "| main@aaaaaaa: agent, after RL | main@aaaaaaa: agent, SFT warm-up | +20.0 | [" in out
    assert out.count("| 28 | 0 | 140 |") == 2              # 4 more right in each of the 7 sets, none fewer


def test_paired_refuses_other_questions_and_runs_without_scores(tmp_path, capsys):
    strong = {s: "1" * 12 + "0" * 8 for s in SETS}
    src = tmp_path / "show.json"
    src.write_text(json.dumps(_show([_exp("10" + "0" * 38, "other", _with(rl__seed=1), _scored(strong, sha="z")),
                                     _exp("20" + "0" * 38, "old", _with(rl__seed=2), _metrics([10] * 7))],
                                    base_metrics=_scored(strong))))
    assert ex.main(["--json", str(src), "--paired", "main", "other"]) == 2
    assert "--paired main other: not the same questions in nq" in capsys.readouterr().err
    assert ex.main(["--json", str(src), "--paired", "main", "old"]) == 2
    assert "old has no per-question scores of agent_rl" in capsys.readouterr().err
    assert ex.main(["--json", str(src), "--paired", "main", "nope"]) == 2
    assert "no finished experiment named nope" in capsys.readouterr().err
    assert ex.main(["--json", str(src), "--paired", "main", ":x"]) == 2
    assert "expected ROW or ROW:SYSTEM" in capsys.readouterr().err


def test_paired_seed_groups_average_each_question_over_seeds(tmp_path, capsys):
    """With --group-over, a --paired side names a whole seed group: per question, the mean over its members."""
    def scores(right):                                   # ``right`` of 20 questions right in every set
        return {s: "1" * right + "0" * (20 - right) for s in SETS}
    r2 = [_exp(f"{i}1" + "0" * 38, f"r2-{i}", _with(rl__seed=i, rl__refiner_weight=0.5), _scored(scores(12 + i)))
          for i in range(2)]
    r1 = [_exp(f"{i}2" + "0" * 38, f"r1-{i}", _with(rl__seed=i), _scored(scores(8 + 2 * i))) for i in range(2)]
    first = tmp_path / "a.json"                          # two saved files, read one after the other
    first.write_text(json.dumps(_show(r2)))
    second = tmp_path / "b.json"
    second.write_text(json.dumps(_show(r1)[1:]))
    argv = ["--json", str(first), "--json", str(second), "--exclude", "main", "--group-over", "rl.seed"]
    assert ex.main(argv + ["--paired", "r2-0", "r1-1"]) == 0
    out = capsys.readouterr().out
    # r2: 12.5 right on average (62.5), r1: 9 (45): +17.5 on every set
    assert "| r2-0 (mean of 2: r2-0, r2-1): agent, after RL | r1-0 (mean of 2: r1-0, r1-1): agent, after RL " \
           "| +17.5 | [" in out
    assert "| 35 | 0 | 140 |" in out            # a set: questions 8 to 12 better on average (r2 - r1 > 0), none worse
    assert ex.main(argv[:4] + ["--paired", "r2-0", "r2-1"]) == 0   # without groups: single runs
    assert "| r2-0: agent, after RL | r2-1: agent, after RL | -5.0 |" in capsys.readouterr().out
    r1[1]["revs"][0]["data"]["metrics"]["results/metrics.json"]["data"] = _scored(scores(10), sha="other")
    second.write_text(json.dumps(_show(r1)[1:]))
    assert ex.main(argv + ["--paired", "r2-0", "r1-0"]) == 2
    assert "r1-0 and r1-1 were not scored on the same questions in nq" in capsys.readouterr().err
    second.write_text("{}")
    assert ex.main(argv) == 2
    assert f"{second}: not `dvc exp show --json` output" in capsys.readouterr().err


def test_also_reads_numbers_of_the_rl_summary():
    """``--also rl.PATH``: a number of results/rl.json (a DVC metric), per run and as mean ± std of a seed group."""
    def with_rl(exp, revisions):
        exp["revs"][0]["data"]["metrics"]["results/rl.json"] = {"data": {"best_step": 2, "revisions": revisions}}
        return exp
    exps = [with_rl(_exp(f"{i}0" + "0" * 38, f"r2-{i}", _with(rl__seed=i), _metrics([30] * 7)), {"n": 4 + 2 * i, "diff": 0.5})
            for i in range(2)]
    exps.append(with_rl(_exp("20" + "0" * 38, "odd", _with(rl__seed=2), _metrics([30] * 7)), {"n": True, "diff": "x"}))
    shown, _ = ex.select(ex.parse_exp_show(_show(exps)))
    also = ("searches", "rl.revisions.n", "rl.revisions.diff", "rl.nope")
    recs = {r["experiment"]: r for r in ex.table(shown, "agent_rl", also=also)["records"]}
    assert recs["r2-1"]["also"] == {"searches": 1.0, "rl.revisions.n": 6, "rl.revisions.diff": 0.5, "rl.nope": None}
    assert recs["odd"]["also"]["rl.revisions.n"] is None and recs["odd"]["also"]["rl.revisions.diff"] is None
    assert recs["main@aaaaaaa"]["also"]["rl.revisions.n"] is None          # a run without results/rl.json
    group = ex.aggregate(shown[1:3], "agent_rl", ("rl.seed",), also=also)["records"][0]
    assert group["also"]["rl.revisions.n"] == 5 and math.isclose(group["also_std"]["rl.revisions.n"], math.sqrt(2))
    md = ex.to_markdown(ex.table(shown, "agent_rl", also=also), "agent_rl", [], "test")
    assert "| r2-1 | 30.0 | 30.0 | 30.0 | 30.0 | 30.0 | 30.0 | 30.0 | 30.0 | 1.00 | 6 | 0.50 | – |" in md   # a count as one
    assert "`searches`: mean over the seven sets; `rl.revisions.n`, `rl.revisions.diff`, `rl.nope`: from the RL " \
           "run's results/rl.json" in md
