"""End to end: the smoke profile through `dvc repro` in a temporary copy of the repository."""
import csv
import json
import shlex
import sys
import time

import pytest
import yaml

from conftest import run


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    return [k for key, v in tree.items()
            for k in (_flat_keys(v, f"{prefix}{key}.") if isinstance(v, dict) else [f"{prefix}{key}"])]


def _leaf(tree: dict, key: str) -> str:
    """The dotted name of the first scalar or list param at or under ``key`` (``index.dense``, ``rl``)."""
    node = tree
    for part in key.split("."):
        node = node[part]
    while isinstance(node, dict):
        first = next(iter(node))
        key, node = f"{key}.{first}", node[first]
    return key


def _outs(body: dict, item: str | None) -> list[str]:
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for out in body.get(kind, []):
            path = out if isinstance(out, str) else next(iter(out))
            paths.append(path.replace("${item}", item or ""))
    return paths


def _snapshot(repo, paths):
    """What each output is now: a file's bytes, a directory's file list (a removed one is None)."""
    def one(p):
        if p.is_file():
            return p.read_bytes()
        return sorted(str(f.relative_to(p)) for f in p.rglob("*")) if p.is_dir() else None
    return {path: one(repo / path) for path in paths}


def _bad_params_lose_nothing(repo):
    """A wrong param of any stage stops `dvc repro <that stage>` at stage `params`, before DVC removes an
    output, and after the fix `dvc checkout` gives a clean `dvc status` (no stage reruns)."""
    params = repo / "params.yaml"
    good = params.read_text()
    tree = yaml.safe_load(good)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    checked = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        keys = [k for k in body.get("params", []) if isinstance(k, str)]
        if name == "params" or not keys:
            continue
        dotted = _leaf(tree, keys[0])
        bad = yaml.safe_load(good)
        *parents, last = dotted.split(".")
        node = bad
        for part in parents:
            node = node[part]
        node[last] = {"not": "a value"}          # the wrong type for any param
        params.write_text(yaml.safe_dump(bad, sort_keys=False))
        item = (stage.get("foreach") or [None])[-1]
        outs = _outs(body, item)
        before = _snapshot(repo, outs)
        proc = run(["dvc", "repro", f"{name}@{item}" if item else name], repo, check=False)
        assert proc.returncode != 0, (name, dotted, proc.stdout)
        ran = [l for l in proc.stdout.splitlines() if l.startswith("Running stage")]
        assert ran == ["Running stage 'params':"], (name, dotted, ran)
        assert "params.yaml:" in proc.stderr and f"'{dotted}'" in proc.stderr, proc.stderr
        assert _snapshot(repo, outs) == before, f"stage {name}: a bad {dotted} removed or changed its outputs"
        params.write_text(good)
        run(["dvc", "checkout"], repo)                 # brings back the params stamp
        assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}, (name, dotted)
        checked.append(name)
    assert {"world", "model", "index_dense", "sft_data", "sft", "rl", "evaluate", "evaluate_refiner", "metrics",
            "report"} <= set(checked)


def _set(params, old, new):
    text = params.read_text()
    assert old in text, old
    params.write_text(text.replace(old, new, 1))


@pytest.mark.slow
def test_smoke_profile_through_dvc_repro(repo_copy):
    repo = repo_copy
    run([sys.executable, "-m", "searchr2.profile", "configs/smoke.yaml"], repo)
    proc = run(["dvc", "repro"], repo)
    for stage in ("params", "world", "model", "index_bm25", "index_dense", "sft_data", "sft", "rl", "evaluate@base",
                  "evaluate@sft", "evaluate@rl", "evaluate_refiner@base", "evaluate_refiner@sft",
                  "evaluate_refiner@rl", "metrics", "report"):
        assert f"Running stage '{stage}'" in proc.stdout, proc.stdout

    # outputs: the seven eval sets, the train split, the corpus, the model, both indexes
    splits = {"nq": "test", "triviaqa": "test", "popqa": "test", "hotpotqa": "dev", "2wikimultihopqa": "dev",
              "musique": "dev", "bamboogle": "test"}
    for name, split in [*splits.items(), ("nq", "train"), ("hotpotqa", "train")]:
        rows = (repo / f"data/qa/{name}/{split}.jsonl").read_text().splitlines()
        assert rows and all(json.loads(r)["golden_answers"] for r in rows)
    assert (repo / "data/models/base/config.json").exists()
    assert json.loads((repo / "results/world.json").read_text())["profile"] == "smoke"
    metrics = json.loads((repo / "results/metrics.json").read_text())
    sft_data = json.loads((repo / "results/sft_data.json").read_text())
    assert sft_data["actor"] > 0 and sft_data["refiner"] > 0 and sft_data["refiner_heldout"] > 0
    assert (repo / "data/models/sft/config.json").exists()
    for model in ("base", "sft"):
        assert 0 <= metrics["refiner"][model]["exact"] <= 1 and metrics["refiner"][model]["n"] == sft_data[
            "refiner_heldout"]
    rl = json.loads((repo / "results/rl.json").read_text())
    assert rl["steps"] >= 1 and rl["best_step"] is not None and (repo / "data/models/rl/config.json").exists()
    for curve in ("reward", "kl", "clip_frac", "acceptance_rate", "time_rollout", "time_update"):
        assert (repo / f"results/rl/plots/metrics/{curve}.tsv").exists(), curve
    for system in ("direct", "rag", "agent_base", "agent_sft", "agent_rl"):
        assert set(metrics[system]) == {*splits, "avg"}
        assert 0 <= metrics[system]["avg"]["em"] <= 100
        model = "base" if system in ("direct", "rag") else system.removeprefix("agent_")
        rows = (repo / f"results/eval/{model}/predictions/{system}/hotpotqa.jsonl").read_text().splitlines()
        assert len(rows) == metrics[system]["hotpotqa"]["n"] and "trajectory" in json.loads(rows[0])

    report = (repo / "results/report.md").read_text()
    assert "profile `smoke`" in report and "agent, after RL" in report and "GRPO run (35.0)" in report
    for name in ("em.csv", "em_by_set.png", "rl_curves.png"):
        assert (repo / "results/report" / name).stat().st_size > 0

    # a no-op repro does nothing, quickly (4 s on an idle machine; the bound leaves room for a loaded one,
    # and a stage that reran would take minutes)
    start = time.perf_counter()
    proc = run(["dvc", "repro"], repo)
    assert "Running stage" not in proc.stdout, proc.stdout
    assert time.perf_counter() - start < 30

    _bad_params_lose_nothing(repo)

    # an experiment on the refiner's loss weight reruns rl (and the RL model's evaluation when the model
    # changed), nothing upstream and no other model's evaluation
    proc = run(["dvc", "exp", "run", "--temp", "-S", "rl.refiner_weight=0.5"], repo)   # outside the workspace
    ran = [l for l in proc.stdout.splitlines() if l.startswith("Running stage")]
    assert ran[:2] == ["Running stage 'params':", "Running stage 'rl':"] and set(ran) <= {
        "Running stage 'params':", "Running stage 'rl':", "Running stage 'evaluate@rl':",
        "Running stage 'evaluate_refiner@rl':", "Running stage 'metrics':",
        "Running stage 'report':"}, ran
    assert "Running stage" not in run(["dvc", "repro"], repo).stdout     # the workspace run is untouched

    # dvc exp show is readable: DVC declares only the headline numbers as metrics, and the README's
    # command prints the params and numbers that differ plus every system's average
    header = run(["dvc", "exp", "show", "--csv"], repo).stdout.splitlines()[0].split(",")
    param_names = set(_flat_keys(yaml.safe_load((repo / "params.yaml").read_text())))
    metric_cols = [c for c in header[5:] if c not in param_names and not (repo / c).exists()]   # not a dep's hash
    assert "em.agent_rl.avg" in metric_cols and len(metric_cols) < 80, (len(header), metric_cols)

    # the experiment table: the experiment beside the workspace and the committed baseline (the copied repo's
    # results of the default profile, 20 questions a set: flagged as not comparable, not averaged in)
    proc = run([sys.executable, "-m", "searchr2.experiments", "--workspace", "--csv", "results/exps.csv"], repo)
    table = {r["experiment"]: r for r in csv.DictReader(open(repo / "results/exps.csv"))}
    exp = [r for name, r in table.items() if name != "workspace" and "@" not in name]
    assert len(exp) == 1 and exp[0]["rl.refiner_weight"] == "0.5" and table["workspace"]["rl.refiner_weight"] == "1.0"
    assert 0 <= float(exp[0]["avg"]) <= 100 and exp[0]["n"] == table["workspace"]["n"] != "20"
    assert "profile" in table["workspace"] and "different numbers of questions per set" in proc.stdout

    # an evaluation param reruns only the evaluations (and the merge and report of their new metrics)
    params = repo / "params.yaml"
    _set(params, "  max_questions: 10", "  max_questions: 8")
    proc = run(["dvc", "repro"], repo)
    ran = [l for l in proc.stdout.splitlines() if l.startswith("Running stage")]
    assert ran[0] == "Running stage 'params':" and sorted(ran[1:4]) == [
        "Running stage 'evaluate@base':", "Running stage 'evaluate@rl':", "Running stage 'evaluate@sft':"] and ran[4:] == [
        "Running stage 'metrics':", "Running stage 'report':"], ran
    assert json.loads((repo / "results/metrics.json").read_text())["agent_rl"]["nq"]["n"] == 8
    # search-time params (retrieval, BM25 k1) rebuild no index and regenerate no world; the warm-up data
    # holds retrieved documents, so it is rewritten and the SFT model retrained
    _set(params, "    k1: 0.9", "    k1: 1.2")
    _set(params, "  method: bm25", "  method: dense")
    proc = run(["dvc", "repro"], repo)
    assert sorted(l for l in proc.stdout.splitlines() if l.startswith("Running stage")) == sorted(
        f"Running stage '{s}':" for s in ("params", "sft_data", "sft", "rl", "evaluate@base", "evaluate@sft", "evaluate@rl",
                                          "evaluate_refiner@base", "evaluate_refiner@sft", "evaluate_refiner@rl",
                                          "metrics", "report"))
    # an index param rebuilds only its index (and what reads it)
    _set(params, "index_type: flat", "index_type: hnsw")
    proc = run(["dvc", "repro"], repo)
    assert "Running stage 'index_dense'" in proc.stdout
    for stage in ("world", "model", "index_bm25"):
        assert f"Running stage '{stage}'" not in proc.stdout

    # the built indexes answer a real question of the world through the one Retriever interface
    probe = ("import json; from searchr2.params import load_params; from searchr2.retrieval import load_retriever\n"
             "p = load_params(); q = json.loads(open('data/qa/nq/test.jsonl').readline())\n"
             "for m in ('bm25', 'dense'):\n"
             "    hits = load_retriever(m, 'data/index', p.index).search([q['question']], 3)[0]\n"
             "    assert len(hits) == 3 and set(hits[0]) >= {'id', 'title', 'text', 'score'}, hits\n"
             "    print(m, 'ok')\n")
    assert run([sys.executable, "-c", probe], repo).stdout.split() == ["bm25", "ok", "dense", "ok"]

    # the README's `dvc exp show` command, on an experiment of a committed run (the usual case), prints a
    # table that fits on a screen: what differs, plus every system's average and the refiner's AUC
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "smoke run"], repo)
    run(["dvc", "exp", "run", "--temp", "-S", "rl.refiner_weight=0.25"], repo)
    readme = (repo / "README.md").read_text()
    command = next(l for l in readme.splitlines() if l.startswith("dvc exp show --only-changed"))
    cols = run([*shlex.split(command), "--csv"], repo).stdout.splitlines()[0].split(",")
    assert {"em.agent_rl.avg", "em.direct.avg", "rl.refiner_weight"} <= set(cols) and len(cols) < 50, cols
