"""Stage entry points meet bad input with one located message, exit 2, and leave no output behind."""
import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import run


def _use_local_data(repo, qa_dir, corpus):
    text = (repo / "configs/paper-qwen2.5-7b.yaml").read_text()
    text = text.replace("source: hub", "source: local").replace("local_dir: null", f"local_dir: {qa_dir}")
    text = text.replace("corpus_path: data/raw/wiki-18.jsonl.gz", f"corpus_path: {corpus}")
    (repo / "params.yaml").write_text(text)


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _local_data(tmp_path, bad_split=None, bad_row=None, corpus_rows=None):
    qa = tmp_path / "flashrag"
    splits = {"nq": ["train", "test"], "triviaqa": ["test"], "popqa": ["test"], "hotpotqa": ["train", "dev"],
              "2wikimultihopqa": ["dev"], "musique": ["dev"], "bamboogle": ["test"]}
    for name, names in splits.items():
        for split in names:
            rows = [{"id": f"{split}_{i}", "question": f"who wrote book {i}", "golden_answers": [f"Author {i}"],
                     "metadata": {}} for i in range(3)]
            if (name, split) == bad_split:
                rows[1] = bad_row
            _write(qa / name / f"{split}.jsonl", rows)
    corpus = tmp_path / "wiki.jsonl"
    _write(corpus, corpus_rows or [{"id": str(i), "contents": f'"Book {i}"\nBook {i} was written by Author {i}.'}
                                   for i in range(5)])
    return qa, corpus


def test_world_stage_loads_local_flashrag_data(repo_copy, tmp_path):
    qa, corpus = _local_data(tmp_path)
    _use_local_data(repo_copy, qa, corpus)
    run([sys.executable, "-m", "stages.world"], repo_copy)
    assert (repo_copy / "data/qa/hotpotqa/dev.jsonl").exists()
    assert len((repo_copy / "data/corpus/corpus.jsonl").read_text().splitlines()) == 5


def test_world_stage_names_the_record_without_answers(repo_copy, tmp_path):
    qa, corpus = _local_data(tmp_path, bad_split=("musique", "dev"),
                             bad_row={"id": "dev_1", "question": "who?", "golden_answers": []})
    _use_local_data(repo_copy, qa, corpus)
    proc = run([sys.executable, "-m", "stages.world"], repo_copy, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{qa}/musique/dev.jsonl:2: field 'golden_answers'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (repo_copy / "data/qa").exists() and not (repo_copy / "data/corpus").exists()


def test_world_stage_names_the_malformed_corpus_line(repo_copy, tmp_path):
    qa, corpus = _local_data(tmp_path, corpus_rows=[{"id": "0", "contents": '"A"\na'}, '{"id": "1", "contents": '])
    _use_local_data(repo_copy, qa, corpus)
    proc = run([sys.executable, "-m", "stages.world"], repo_copy, check=False)
    assert proc.returncode == 2 and f"{corpus}:2: not valid JSON" in proc.stderr, proc.stderr
    assert not (repo_copy / "data/corpus").exists()


def test_stage_names_a_misspelt_param(repo_copy):
    params = repo_copy / "params.yaml"
    params.write_text(params.read_text().replace("  top_k: 3", "  topk: 3"))
    proc = run([sys.executable, "-m", "stages.index_dense"], repo_copy, check=False)
    assert proc.returncode == 2
    assert "params.yaml:" in proc.stderr and "field 'rollout.topk': unknown param; did you mean 'rollout.top_k'?" in proc.stderr


def test_a_killed_stage_leaves_no_partial_output(tmp_path):
    """SIGTERM mid-write: the stage exits 143 and neither the output nor its temporary sibling remains."""
    import signal
    import subprocess
    import time

    from conftest import ENV, ROOT

    script = ("import sys, time\nfrom searchr2.io import atomic_dir\nfrom searchr2.stage import run_stage\n"
              "def main():\n    with atomic_dir(sys.argv[1]) as d:\n        (d / 'half').write_text('x')\n"
              "        print('writing', flush=True)\n        time.sleep(60)\n"
              "run_stage('slow', main, argv=[])\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_sft_data_stage_names_the_train_record_without_answers(repo_copy):
    qa = repo_copy / "data/qa"
    _write(qa / "nq/train.jsonl", [{"id": "a", "question": "who?", "golden_answers": ["x"], "metadata": {}}])
    _write(qa / "hotpotqa/train.jsonl", [{"id": "b", "question": "who?", "golden_answers": ["x"], "metadata": {}},
                                         {"id": "c", "question": "who else?", "metadata": {}}])
    proc = run([sys.executable, "-m", "stages.sft_data"], repo_copy, check=False)
    assert proc.returncode == 2 and "data/qa/hotpotqa/train.jsonl:2: field 'golden_answers'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (repo_copy / "data/sft").exists()
    (qa / "hotpotqa/train.jsonl").unlink()
    proc = run([sys.executable, "-m", "stages.sft_data"], repo_copy, check=False)
    assert proc.returncode == 2 and "hotpotqa/train.jsonl: no train split" in proc.stderr, proc.stderr


def test_metrics_stage_merges_the_models_evaluations_and_names_a_missing_one(repo_copy):
    ev = repo_copy / "results/eval"
    scores = {"nq": {"em": 10.0, "n": 2}, "avg": {"em": 10.0}}

    def part(model, systems, refiner=None):
        (ev / model).mkdir(parents=True, exist_ok=True)
        (ev / model / "metrics.json").write_text(json.dumps({s: scores for s in systems}))
        (ev / model / "timing.json").write_text(json.dumps({s: {"seconds": 1.0} for s in systems}))
        if refiner is not None:                              # what stage evaluate_refiner@<model> writes
            (repo_copy / "results/refiner").mkdir(parents=True, exist_ok=True)
            (repo_copy / "results/refiner" / f"{model}.json").write_text(json.dumps(refiner))

    before = (repo_copy / "results/metrics.json").read_text()
    part("base", ["direct", "rag", "agent_base"], {"exact": 0.1})
    part("rl", ["agent_rl"], {"exact": 0.5})
    proc = run([sys.executable, "-m", "stages.metrics"], repo_copy, check=False)
    assert proc.returncode == 2 and "results/eval/sft/metrics.json: missing; run `dvc repro evaluate@sft`" in proc.stderr
    part("sft", [], {})                   # evaluated, but not the system the params list; no refiner examples
    proc = run([sys.executable, "-m", "stages.metrics"], repo_copy, check=False)
    assert proc.returncode == 2 and "results/eval/sft/metrics.json: field 'agent_sft': no results" in proc.stderr
    assert (repo_copy / "results/metrics.json").read_text() == before       # nothing half-merged
    (repo_copy / "results/refiner/rl.json").unlink()
    part("sft", ["agent_sft"], {"exact": 0.3})
    proc = run([sys.executable, "-m", "stages.metrics"], repo_copy, check=False)
    assert proc.returncode == 2 and "results/refiner/rl.json: missing; run `dvc repro evaluate_refiner@rl`" in proc.stderr
    part("rl", ["agent_rl"], {"exact": 0.5})
    run([sys.executable, "-m", "stages.metrics"], repo_copy)
    merged = json.loads((repo_copy / "results/metrics.json").read_text())
    # agent_base was evaluated but evaluate.systems (the default's) does not list it: left out
    assert set(merged) == {"profile", "world", "direct", "rag", "agent_sft", "agent_rl", "refiner"}
    assert merged["refiner"] == {"base": {"exact": 0.1}, "sft": {"exact": 0.3}, "rl": {"exact": 0.5}}
    summary = json.loads((repo_copy / "results/summary.json").read_text())      # what dvc exp show displays
    assert set(summary["em"]) == set(merged) - {"profile", "world", "refiner"}
    assert summary["refiner"] == merged["refiner"]
    assert set(json.loads((repo_copy / "results/eval_timing.json").read_text())) == {
        "direct", "rag", "agent_sft", "agent_rl"}
    proc = run([sys.executable, "-m", "stages.evaluate", "ppo"], repo_copy, check=False)
    assert proc.returncode == 2 and "argument model: invalid choice: 'ppo'" in proc.stderr


def test_evaluate_stage_with_no_system_of_its_model_writes_an_empty_part(repo_copy):
    """`evaluate.systems` may leave a model out (e.g. only agent_rl): its stage loads nothing and writes
    an empty part, which the metrics stage reads as "nothing asked", not as a missing evaluation."""
    params = repo_copy / "params.yaml"
    text = params.read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith("systems:"))
    params.write_text(text.replace(line, "  systems: [agent_rl]"))
    (repo_copy / "data/models/base").mkdir(parents=True, exist_ok=True)   # no model in it: must not be loaded
    proc = run([sys.executable, "-m", "stages.evaluate", "base"], repo_copy)
    assert "names no system of the base model; nothing to score" in proc.stdout
    part = repo_copy / "results/eval/base"
    assert json.loads((part / "metrics.json").read_text()) == {} and json.loads((part / "timing.json").read_text()) == {}
    assert not (part / "predictions").exists()


def test_no_stage_imports_another_and_the_library_never_loads_the_stage_layer():
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n == "stages" or n.startswith("stages.")], (path.name, names)
    probe = ("import sys, searchr2.data, searchr2.corpus, searchr2.evaluation, searchr2.report, "
             "searchr2.experiments, searchr2.paths, searchr2.world; assert 'searchr2.stage' not in sys.modules")
    subprocess.run([sys.executable, "-c", probe], cwd=root, check=True)
