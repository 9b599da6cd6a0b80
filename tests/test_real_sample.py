"""The paper profile's data path on files in the real formats (data/raw/sample, configs/real-sample.yaml)."""
import gzip
import json
import sys
from pathlib import Path

import pytest

import real_sample
from conftest import ROOT, run

SAMPLE = ROOT / "data/raw/sample"


def _content(path: Path):
    """What a sample file holds, independent of how pyarrow or gzip laid out its bytes."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def test_the_committed_sample_is_what_the_script_writes(tmp_path):
    written = real_sample.write(tmp_path)
    committed = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    assert committed == sorted(p.relative_to(tmp_path) for p in written)
    for rel in committed:
        assert _content(SAMPLE / rel) == _content(tmp_path / rel), rel


@pytest.mark.slow
def test_real_formats_through_prepare_indexes_and_direct_rag(repo_copy):
    repo = repo_copy
    run([sys.executable, "-m", "searchr2.profile", "configs/real-sample.yaml"], repo)
    proc = run(["dvc", "repro", "evaluate@base"], repo)
    ran = {l.split("'")[1] for l in proc.stdout.splitlines() if l.startswith("Running stage")}
    # the base model's evaluation needs no warm-up data
    assert ran == {"params", "world", "model", "index_bm25", "index_dense", "evaluate@base"}, ran

    world = json.loads((repo / "results/world.json").read_text())
    assert world["profile"] == "real-sample" and world["outputs"] == {"qa_dir": "data/qa",
                                                                      "corpus": "data/corpus/corpus.jsonl"}
    assert ".tmp" not in json.dumps(world)                              # no temporary path recorded
    corpus = world["corpus"]
    assert corpus["path"] == "data/raw/sample/wiki-18-sample.jsonl.gz" and corpus["dvc_tracked"] is True
    assert corpus["rows_kept"] == len(real_sample.corpus_lines()) and len(corpus["sha256"]) == 64
    schemas = {name: {s["schema"] for s in entry["sources"]} for name, entry in world["eval"].items()}
    assert schemas == {"nq": {"flashrag"}, "triviaqa": {"flashrag"}, "popqa": {"search-r1"},
                       "hotpotqa": {"search-r1"}, "2wikimultihopqa": {"flashrag"}, "musique": {"flashrag"},
                       "bamboogle": {"search-r1"}}
    popqa = world["eval"]["popqa"]["sources"][0]
    assert popqa["layout"] == "merged" and popqa["rows_dropped"] == {"data_source=bamboogle": 1}
    assert all(s["dvc_tracked"] and s["bytes"] > 0 for e in world["eval"].values() for s in e["sources"])
    assert world["train"]["hotpotqa"]["records"] == 2 and "warnings" not in world

    # every passage made canonical: a quoted title line, whatever the source wrote
    lines = (repo / "data/corpus/corpus.jsonl").read_text().splitlines()
    assert len(lines) == corpus["rows_kept"] and all(json.loads(l)["contents"].startswith('"') for l in lines)
    metrics = json.loads((repo / "results/eval/base/metrics.json").read_text())
    for system in ("direct", "rag"):
        assert {s: metrics[system][s]["n"] for s in world["eval"]} == {
            s: e["records"] for s, e in world["eval"].items()}
    for index in ("bm25", "dense"):
        assert any((repo / "data/index" / index).iterdir())

    # a changed raw file makes stage world stale, and repro prepares the data again
    assert "world" not in json.loads(run(["dvc", "status", "--json"], repo).stdout)   # (later stages never ran)
    extra = {"id": "mq_1", "question": "Which river rises in the Grau Hills?", "golden_answers": ["Kessa River"]}
    with open(repo / "data/raw/sample/qa/musique/dev.jsonl", "a") as f:
        f.write(json.dumps(extra) + "\n")
    assert "world" in json.loads(run(["dvc", "status", "--json"], repo).stdout)
    proc = run(["dvc", "repro", "evaluate@base"], repo)
    assert "Running stage 'world'" in proc.stdout
    assert json.loads((repo / "results/world.json").read_text())["eval"]["musique"]["records"] == 2
