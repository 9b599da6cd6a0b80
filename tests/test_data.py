"""Tests for searchr2.data and searchr2.qa_formats: QA loaders (local and hub) for FlashRAG and Search-R1/verl files,
merged files split by data_source, per-file stats, the split rule, and the wiki-18 corpus stream."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from searchr2.corpus import iter_source_passages
from searchr2.data import (PAPER_EVAL_SPLITS, PAPER_TEST_SETS, DataConfig, HubError, eval_split, first_eval_split,
                           describe_source, load_qa_split, load_train_records, prepare_real_data, read_qa_file, validate_qa_record,
                           write_qa_file)
from searchr2.io import InputError


def qa(i: int, split: str = "test", **extra) -> dict:
    rec = {"id": f"{split}_{i}", "question": f" who wrote book {i}? ",
           "golden_answers": [f"Author {i}", f"A. {i}"], "metadata": {"type": "bridge", "n": i}}
    rec.update(extra)
    return rec


def write_jsonl(path: Path, records, raw_lines=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + list(raw_lines)
    data = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def write_parquet(path: Path, records) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_parquet(path, index=False)
    return path


def passage(i, title="Aaron", text=None) -> dict:
    return {"id": str(i), "contents": f'"{title} {i}"\n{text or f"Aaron {i} is a prophet."}'}


@pytest.fixture
def local(tmp_path):
    """A FlashRAG-style directory: nq has test (jsonl) + train; hotpotqa dev (parquet) + train."""
    root = tmp_path / "flashrag"
    write_jsonl(root / "nq" / "test.jsonl", [qa(i) for i in range(5)])
    write_jsonl(root / "nq" / "dev.jsonl", [qa(i, "dev") for i in range(3)])
    write_jsonl(root / "nq" / "train.jsonl.gz", [qa(i, "train") for i in range(6)])
    write_parquet(root / "hotpotqa" / "dev.parquet", [qa(i, "dev") for i in range(4)])
    write_jsonl(root / "hotpotqa" / "train.jsonl", [qa(i, "train") for i in range(7)])
    corpus = write_jsonl(tmp_path / "wiki18.jsonl.gz", [passage(i) for i in range(10)])
    return root, corpus


def cfg_local(root, corpus=None, **kw) -> DataConfig:
    kw.setdefault("test_sets", ["nq", "hotpotqa"])
    return DataConfig(source="local", local_dir=str(root), corpus_path=str(corpus) if corpus else None, **kw)


# ----------------------------------------------------------------------------- config and records

def test_config_accepts_lists_and_rejects_bad_values():
    cfg = DataConfig(test_sets=["nq"], train_sets=["nq", "hotpotqa"])
    assert cfg.test_sets == ("nq",) and cfg.train_sets == ("nq", "hotpotqa")
    hash(cfg)
    with pytest.raises(ValueError, match="data.source"):
        DataConfig(source="web")
    with pytest.raises(ValueError, match="data.max_test"):
        DataConfig(max_test=0)
    with pytest.raises(ValueError, match="data.test_sets"):
        DataConfig(test_sets=["../etc"])


def test_world_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="searchr2.world"):
        list(load_qa_split(DataConfig(), "nq", "test"))


def test_validate_qa_record_normalises():
    rec = validate_qa_record({"id": 7, "question": "  what?  ", "golden_answers": [" x "], "extra": 1},
                             "f.jsonl", 3)
    assert rec == {"id": "7", "question": "what?", "golden_answers": ["x"], "metadata": {}}
    assert validate_qa_record(qa(1, metadata=None), "f", 1)["metadata"] == {}


@pytest.mark.parametrize("change, field, words", [
    ({"golden_answers": None}, "golden_answers", "expected list or tuple or str, got NoneType"),
    ({"golden_answers": []}, "golden_answers", "is empty"),
    ({"golden_answers": ["ok", " "]}, "golden_answers", "item 1: is blank"),
    ({"golden_answers": ["ok", 3]}, "golden_answers", "item 1: expected str"),
    ({"question": 12}, "question", "expected str, got int"),
    ({"question": "   "}, "question", "is blank"),
    ({"id": True}, "id", "bool"),
    ({"metadata": [1]}, "metadata", "expected dict"),
])
def test_validate_qa_record_errors(change, field, words):
    rec = qa(0)
    rec.update(change)
    with pytest.raises(InputError) as e:
        validate_qa_record(rec, "data/x.jsonl", 12)
    assert str(e.value).startswith(f"data/x.jsonl:12: field '{field}': ")
    assert words in str(e.value)
    assert (e.value.path, e.value.line, e.value.field) == ("data/x.jsonl", 12, field)


def test_validate_qa_record_missing_answers():
    rec = qa(0)
    del rec["golden_answers"]
    with pytest.raises(InputError, match=r"^f\.jsonl:2: field 'golden_answers': missing$"):
        validate_qa_record(rec, "f.jsonl", 2)


# ----------------------------------------------------------------------------- local loading

def test_local_loading_split_choice_and_formats(local):
    root, _ = local
    cfg = cfg_local(root)
    assert eval_split(cfg, "nq") == "test"          # test preferred over dev
    assert eval_split(cfg, "hotpotqa") == "dev"     # no test: dev
    recs = list(load_qa_split(cfg, "nq", "test"))
    assert [r["id"] for r in recs] == [f"test_{i}" for i in range(5)]
    assert recs[0]["question"] == "who wrote book 0?"
    assert recs[0]["golden_answers"] == ["Author 0", "A. 0"]
    assert recs[0]["metadata"] == {"type": "bridge", "n": 0}
    pq = list(load_qa_split(cfg, "hotpotqa", "dev"))   # parquet: lists/dicts come back as Python types
    assert pq[2] == {"id": "dev_2", "question": "who wrote book 2?", "golden_answers": ["Author 2", "A. 2"],
                     "metadata": {"type": "bridge", "n": 2}}
    assert len(list(load_qa_split(cfg, "nq", "train"))) == 6   # .jsonl.gz
    assert [r["id"] for r in load_qa_split(cfg, "nq", "train", limit=2)] == ["train_0", "train_1"]


def test_local_parquet_shards_in_name_order(tmp_path):
    root = tmp_path / "d"
    write_parquet(root / "popqa" / "test" / "0001.parquet", [qa(i) for i in range(3, 5)])
    write_parquet(root / "popqa" / "test" / "0000.parquet", [qa(i) for i in range(3)])
    cfg = DataConfig(source="local", local_dir=str(root))
    assert eval_split(cfg, "popqa") == "test"
    assert [r["id"] for r in load_qa_split(cfg, "popqa", "test")] == [f"test_{i}" for i in range(5)]


def test_local_ambiguous_forms_refused(local):
    root, _ = local
    write_parquet(root / "nq" / "test.parquet", [qa(0)])
    with pytest.raises(InputError, match="several forms"):
        load_qa_split(cfg_local(root), "nq", "test")


def test_local_missing_dataset_and_split(local, tmp_path):
    root, _ = local
    cfg = cfg_local(root)
    with pytest.raises(InputError) as e:
        eval_split(cfg, "bamboogle")
    msg = str(e.value)
    assert str(root / "bamboogle" / "test.jsonl") in msg and str(root / "bamboogle" / "dev.jsonl") in msg
    with pytest.raises(InputError) as e:
        load_qa_split(cfg, "hotpotqa", "test")
    assert str(root / "hotpotqa" / "test.jsonl") in str(e.value)
    assert str(root / "hotpotqa" / "test.parquet") in str(e.value)
    with pytest.raises(InputError, match="directory not found"):
        load_qa_split(cfg_local(tmp_path / "nope"), "nq", "test")
    with pytest.raises(ValueError, match="data.local_dir is required"):
        load_qa_split(DataConfig(source="local"), "nq", "test")


def test_local_malformed_json_line(tmp_path):
    root = tmp_path / "d"
    path = write_jsonl(root / "nq" / "test.jsonl", [qa(0), qa(1)], raw_lines=['{"id": "x", "question": '])
    with pytest.raises(InputError) as e:
        list(load_qa_split(DataConfig(source="local", local_dir=str(root)), "nq", "test"))
    assert str(e.value).startswith(f"{path}:3: not valid JSON")


def test_local_missing_and_empty_answers_located(tmp_path):
    root = tmp_path / "d"
    bad = qa(1)
    del bad["golden_answers"]
    path = write_jsonl(root / "nq" / "test.jsonl", [qa(0), bad])
    cfg = DataConfig(source="local", local_dir=str(root))
    with pytest.raises(InputError, match=rf"^{path}:2: field 'golden_answers': missing"):
        list(load_qa_split(cfg, "nq", "test"))
    path = write_jsonl(root / "nq" / "test.jsonl", [qa(0), qa(1), qa(2, golden_answers=[])])
    with pytest.raises(InputError, match=rf"^{path}:3: field 'golden_answers': is empty"):
        list(load_qa_split(cfg, "nq", "test"))
    # The cap stops before the bad record: only what is kept is validated.
    assert len(list(load_qa_split(cfg, "nq", "test", limit=2))) == 2


def test_parquet_row_index_is_the_line(tmp_path):
    root = tmp_path / "d"
    path = write_parquet(root / "musique" / "dev.parquet", [qa(0), qa(1), qa(2, question=None)])
    with pytest.raises(InputError, match=rf"^{path}:3: field 'question': expected str, got NoneType"):
        list(load_qa_split(DataConfig(source="local", local_dir=str(root)), "musique", "dev"))


def test_duplicate_qa_id(tmp_path):
    root = tmp_path / "d"
    path = write_jsonl(root / "nq" / "test.jsonl", [qa(0), qa(1), qa(0)])
    with pytest.raises(InputError, match=rf"^{path}:3: field 'id': duplicate id 'test_0' \(first at {path}:1\)"):
        list(load_qa_split(DataConfig(source="local", local_dir=str(root)), "nq", "test"))


# ----------------------------------------------------------------------------- hub loading

@pytest.fixture
def fake_hub(monkeypatch):
    """Replace the hub with in-memory datasets.Dataset objects in the FlashRAG layout."""
    import datasets

    store = {
        "nq": {"train": [qa(i, "train") for i in range(4)], "dev": [qa(i, "dev") for i in range(2)],
               "test": [qa(i) for i in range(5)]},
        "hotpotqa": {"train": [qa(i, "train") for i in range(3)], "dev": [qa(i, "dev") for i in range(6)]},
        "bamboogle": {"test": [qa(0), qa(1, golden_answers=[])]},
    }
    calls = []

    def split_names(path, config_name=None, revision=None, **kw):
        assert path == "RUC-NLPIR/FlashRAG_datasets"
        if config_name not in store:
            raise ValueError(f"BuilderConfig '{config_name}' not found")
        return list(store[config_name])

    def load_dataset(path, name=None, split=None, revision=None, **kw):
        calls.append((path, name, split, revision))
        if name not in store or split not in store[name]:
            raise ValueError(f'Unknown split "{split}"')
        return datasets.Dataset.from_list(store[name][split])

    monkeypatch.setattr(datasets, "get_dataset_split_names", split_names)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_loading(fake_hub):
    cfg = DataConfig(source="hub", hub_revision="abc123")
    assert eval_split(cfg, "nq") == "test"
    assert eval_split(cfg, "hotpotqa") == "dev"
    recs = list(load_qa_split(cfg, "hotpotqa", "dev", limit=3))
    assert [r["id"] for r in recs] == ["dev_0", "dev_1", "dev_2"]
    assert recs[0]["question"] == "who wrote book 0?" and recs[0]["metadata"] == {"type": "bridge", "n": 0}
    assert fake_hub[-1] == ("RUC-NLPIR/FlashRAG_datasets", "hotpotqa", "dev", "abc123")
    with pytest.raises(InputError) as e:
        list(load_qa_split(cfg, "bamboogle", "test"))
    assert str(e.value).startswith(
        "hf://datasets/RUC-NLPIR/FlashRAG_datasets@abc123/bamboogle[test]:2: field 'golden_answers': is empty")


def test_hub_unknown_config_is_a_hub_error(fake_hub):
    with pytest.raises(HubError, match="config 'webq'.*data.source=local"):
        eval_split(DataConfig(source="hub"), "webq")


def test_hub_offline_error_is_clear(monkeypatch):
    """The real datasets API with the hub unreachable (HF_DATASETS_OFFLINE or no network)."""
    import datasets

    def offline(*a, **kw):
        raise ConnectionError("Couldn't reach 'RUC-NLPIR/FlashRAG_datasets' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "get_dataset_split_names", offline)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = DataConfig(source="hub")
    for call in (lambda: eval_split(cfg, "popqa"), lambda: list(load_qa_split(cfg, "popqa", "test"))):
        with pytest.raises(HubError) as e:
            call()
        msg = str(e.value)
        assert "'RUC-NLPIR/FlashRAG_datasets', config 'popqa'" in msg
        assert "data.source=local" in msg and "ConnectionError" in msg


def test_hub_really_offline(monkeypatch, tmp_path):
    """Unpatched: with HF_DATASETS_OFFLINE=1 and an empty cache the real call fails fast, clearly."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache", raising=False)
    with pytest.raises(HubError, match="config 'nq'.*data.source=local"):
        eval_split(DataConfig(source="hub"), "nq")


def test_prepare_from_hub(fake_hub, tmp_path):
    corpus = write_jsonl(tmp_path / "wiki.jsonl", [passage(i) for i in range(3)])
    cfg = DataConfig(source="hub", corpus_path=str(corpus), test_sets=("nq", "hotpotqa"), max_test=2)
    m = prepare_real_data(cfg, tmp_path / "qa", tmp_path / "corpus.jsonl")
    assert m["eval"]["nq"]["split"] == "test" and m["eval"]["hotpotqa"]["split"] == "dev"
    assert m["eval"]["nq"]["records"] == 2 and m["train"]["nq"]["records"] == 4
    assert m["origin"] == "hf://datasets/RUC-NLPIR/FlashRAG_datasets"
    [src] = m["eval"]["nq"]["sources"]
    assert src["path"] == "hf://datasets/RUC-NLPIR/FlashRAG_datasets/nq[test]"
    assert (src["layout"], src["schema"], src["rows_kept"], src["answers_from"]) == ("hub", "flashrag", 2,
                                                                                    {"golden_answers": 2})
    assert m["train"]["nq"]["sources"][0]["complete"] is True
    lines = (tmp_path / "qa" / "hotpotqa" / "dev.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["dev_0", "dev_1"]


# ----------------------------------------------------------------------------- corpus

def test_source_passages_plain_and_gz(tmp_path):
    recs = [passage(0), {"id": 1, "contents": '"Abba"\nAbba is a band.', "extra": "dropped"}]
    for name in ("c.jsonl", "c.jsonl.gz"):
        path = write_jsonl(tmp_path / name, recs, raw_lines=[""])
        got = list(iter_source_passages(path))
        assert got == [{"id": "0", "contents": '"Aaron 0"\nAaron 0 is a prophet.'},
                       {"id": "1", "contents": '"Abba"\nAbba is a band.'}]


@pytest.mark.parametrize("bad, line, words", [
    ('{"id": "2", "contents": ', 3, "not valid JSON"),
    ('["a"]', 3, "expected a JSON object"),
    ('{"id": "2"}', 3, "field 'contents': missing"),
    ('{"id": "2", "contents": "no title line"}', 3, "field 'contents': has no title line"),
    ('{"id": "2", "contents": ""}', 3, "field 'contents': is empty"),
    ('{"id": null, "contents": "\\"T\\"\\nx"}', 3, "field 'id': expected str or int"),
    ('{"id": "0", "contents": "\\"T\\"\\nx"}', 3, "field 'id': duplicate passage id '0'"),
    ('{"id": 1, "contents": "\\"T\\"\\nx"}', 3, "field 'id': duplicate passage id '1'"),
])
def test_source_passages_errors(tmp_path, bad, line, words):
    path = write_jsonl(tmp_path / "c.jsonl.gz", [passage(0), passage(1)], raw_lines=[bad])
    with pytest.raises(InputError) as e:
        list(iter_source_passages(path))
    assert str(e.value).startswith(f"{path}:{line}: ") and words in str(e.value)


def test_corpus_duplicate_ids_non_numeric_and_large(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [passage("doc-a"), passage("007"), passage("7"),
                                              passage(10**12), passage("doc-b"), passage(10**12)])
    with pytest.raises(InputError, match=rf"^{path}:6: field 'id': duplicate passage id '{10**12}'"):
        list(iter_source_passages(path))
    path = write_jsonl(tmp_path / "c.jsonl", [passage("doc-a"), passage(5), passage("doc-a")])
    with pytest.raises(InputError, match=rf"^{path}:3: field 'id': duplicate"):
        list(iter_source_passages(path))


def test_corpus_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        list(iter_source_passages(tmp_path / "nope.jsonl"))


# ----------------------------------------------------------------------------- prepare

def test_prepare_local_end_to_end(local, tmp_path):
    root, corpus = local
    cfg = cfg_local(root, corpus, max_test=3, max_train=5)
    qa_dir, out = tmp_path / "out" / "qa", tmp_path / "out" / "corpus" / "wiki.jsonl"
    m = prepare_real_data(cfg, qa_dir, out)
    assert sorted(str(p.relative_to(qa_dir)) for p in qa_dir.rglob("*.jsonl")) == [
        "hotpotqa/dev.jsonl", "hotpotqa/train.jsonl", "nq/test.jsonl", "nq/train.jsonl"]
    sources = {name: entry.pop("sources") for name, entry in m["eval"].items()}
    assert m["eval"] == {                       # output files named relative to the QA folder: no temporary path
        "nq": {"split": "test", "records": 3, "file": "nq/test.jsonl"},
        "hotpotqa": {"split": "dev", "records": 3, "file": "hotpotqa/dev.jsonl"}}
    [nq_src] = sources["nq"]
    assert nq_src["path"] == str(root / "nq" / "test.jsonl") and nq_src["schema"] == "flashrag"
    # provenance of every source file: as the params name it, its size and hash, whether DVC watches it
    raw = root / "nq" / "test.jsonl"
    assert (nq_src["bytes"], nq_src["sha256"]) == (raw.stat().st_size, hashlib.sha256(raw.read_bytes()).hexdigest())
    assert nq_src["dvc_tracked"] is False and any(str(raw) in w for w in m["warnings"])
    assert (nq_src["layout"], nq_src["rows_read"], nq_src["rows_kept"], nq_src["complete"]) == ("dataset", 3, 3, False)
    assert nq_src["ids_from"] == {"id": 3} and nq_src["warnings"] == []
    assert sources["hotpotqa"][0]["schema"] == "flashrag" and sources["hotpotqa"][0]["path"].endswith("dev.parquet")
    json.dumps(m)                                      # the manifest stays JSON
    assert m["train"]["nq"]["records"] == 5 and m["train"]["hotpotqa"]["records"] == 5
    assert (m["corpus"]["path"], m["corpus"]["rows_read"], m["corpus"]["rows_kept"]) == (str(corpus), 10, 10)
    assert m["corpus"]["sha256"] == hashlib.sha256(Path(corpus).read_bytes()).hexdigest()
    first = json.loads((qa_dir / "nq" / "test.jsonl").read_text().splitlines()[0])
    assert first == {"id": "test_0", "question": "who wrote book 0?", "golden_answers": ["Author 0", "A. 0"],
                     "metadata": {"type": "bridge", "n": 0}}
    lines = out.read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[9]) == passage(9)
    # Deterministic: a second run gives identical bytes; gz output is byte-stable too.
    before = {p: p.read_bytes() for p in qa_dir.rglob("*.jsonl")}
    prepare_real_data(cfg, qa_dir, out)
    assert before == {p: p.read_bytes() for p in qa_dir.rglob("*.jsonl")}
    gz1 = tmp_path / "a.jsonl.gz"
    prepare_real_data(cfg, qa_dir, gz1)
    b1 = gz1.read_bytes()
    prepare_real_data(cfg, qa_dir, gz1)
    assert gz1.read_bytes() == b1 and gzip.decompress(b1).decode() == out.read_text()


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_prepare_bad_corpus_leaves_nothing(local, tmp_path):
    root, _ = local
    corpus = write_jsonl(tmp_path / "bad.jsonl", [passage(0), passage(1), passage(0)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError, match=rf"^{corpus}:3: field 'id': duplicate passage id '0'"):
        prepare_real_data(cfg_local(root, corpus), out_dir / "qa", out_dir / "corpus.jsonl")
    assert _leftovers(out_dir) == []


def test_prepare_bad_qa_leaves_nothing_and_keeps_previous(local, tmp_path):
    root, corpus = local
    out_dir = tmp_path / "out"
    cfg = cfg_local(root, corpus)
    prepare_real_data(cfg, out_dir / "qa", out_dir / "corpus.jsonl")
    previous = (out_dir / "corpus.jsonl").read_bytes()
    write_jsonl(root / "hotpotqa" / "train.jsonl", [qa(0, "train"), qa(1, "train", question="")])
    with pytest.raises(InputError, match=r"train\.jsonl:2: field 'question'"):
        prepare_real_data(cfg, out_dir / "qa", out_dir / "corpus.jsonl")
    assert _leftovers(out_dir) == ["corpus.jsonl", "qa"]   # no temporary siblings
    assert (out_dir / "corpus.jsonl").read_bytes() == previous
    assert (out_dir / "qa" / "hotpotqa" / "train.jsonl").exists()


def test_prepare_requires_corpus_and_real_source(local, tmp_path):
    root, _ = local
    with pytest.raises(ValueError, match="data.corpus_path is required"):
        prepare_real_data(cfg_local(root), tmp_path / "qa", tmp_path / "c.jsonl")
    with pytest.raises(InputError, match="data.corpus_path: file not found"):
        prepare_real_data(cfg_local(root, tmp_path / "none.jsonl"), tmp_path / "qa", tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="searchr2.world"):
        prepare_real_data(DataConfig(), tmp_path / "qa", tmp_path / "c.jsonl")
    assert _leftovers(tmp_path) == ["flashrag", "wiki18.jsonl.gz"]


# ----------------------------------------------------------------------------- the split rule and the stage loaders

def test_one_split_rule_test_then_dev():
    assert first_eval_split(lambda s: True) == "test"
    assert first_eval_split(lambda s: s == "dev") == "dev"
    assert first_eval_split(lambda s: s == "train") is None
    asked = []
    first_eval_split(lambda s: asked.append(s) or True)
    assert asked == ["test"]                       # dev is not asked about once test is there
    # what the embedded world generates: FlashRAG's evaluation splits, in the paper's table order
    assert list(PAPER_EVAL_SPLITS.items()) == [
        ("nq", "test"), ("triviaqa", "test"), ("popqa", "test"), ("hotpotqa", "dev"), ("2wikimultihopqa", "dev"),
        ("musique", "dev"), ("bamboogle", "test")]
    assert tuple(PAPER_EVAL_SPLITS) == PAPER_TEST_SETS


def test_write_and_read_qa_file_and_train_records(tmp_path):
    records = [validate_qa_record(qa(i, "train"), "x", i) for i in range(4)]
    assert write_qa_file(records, tmp_path / "qa" / "nq" / "train.jsonl", "nq/train") == 4
    write_qa_file(records[:2], tmp_path / "qa" / "hotpotqa" / "train.jsonl", "hotpotqa/train")
    assert list(read_qa_file(tmp_path / "qa" / "nq" / "train.jsonl", limit=3)) == records[:3]
    assert load_train_records(tmp_path / "qa", ("nq", "hotpotqa")) == records + records[:2]
    with pytest.raises(InputError, match=r"musique/train.jsonl: no train split; run the `world` stage"):
        load_train_records(tmp_path / "qa", ("nq", "musique"))
    write_qa_file([], tmp_path / "qa" / "popqa" / "train.jsonl", "popqa/train")
    with pytest.raises(InputError, match=r"the train sets \['popqa'\] are empty"):
        load_train_records(tmp_path / "qa", ["popqa"])
    path = write_jsonl(tmp_path / "dup.jsonl", [qa(0), qa(1), qa(0)])
    with pytest.raises(InputError, match=rf"^{path}:3: field 'id': duplicate id 'test_0'"):
        list(read_qa_file(path))


# ----------------------------------------------------------------------------- Search-R1 / verl files
# Fixtures below are written in the shapes Search-R1's converters (arXiv 2503.09516, scripts/data_process/
# nq_search.py and the *_merge.py scripts) and verl's re-packaging of them produce: the FlashRAG row
# mapped to {data_source, prompt, ability, reward_model, extra_info}, with FlashRAG's own columns kept
# beside them by datasets.map (its question rewritten in place: stripped, '?' appended).

from searchr2.qa_formats import SourceStats, detect_schema, question_from_prompt  # noqa: E402


def sr1_prompt(question: str, system: bool = False, newline: bool = True) -> list:
    """A chat prompt built like Search-R1's instruction template: the question on a last 'Question:' line."""
    text = ("Answer the given question. Think first, search with <search> query </search> when some "
            "knowledge is missing, and give the final answer inside <answer> and </answer>. "
            f"Question: {question}" + ("\n" if newline else ""))
    messages = [{"role": "user", "content": text}]
    return ([{"role": "system", "content": "You are a helpful assistant."}] if system else []) + messages


def converted(question: str) -> str:
    """What Search-R1's converter does to a question."""
    q = question.strip()
    return q if q.endswith("?") else q + "?"


def sr1_row(source: str, index: int, question: str, answers, split: str = "test", flashrag: bool = True,
            rewrite_column: bool = True, truth="target", extra: dict | None = None) -> dict:
    """One row as Search-R1's converter writes it (``flashrag``: with FlashRAG's columns kept; ``extra``:
    more extra_info keys, as other converters add)."""
    ground_truth = {"target": answers} if truth == "target" else truth
    row = {"data_source": source, "prompt": sr1_prompt(converted(question)), "ability": "fact-reasoning",
           "reward_model": {"style": "rule", "ground_truth": ground_truth},
           "extra_info": {"split": split, "index": index, **(extra or {})}}
    if flashrag:
        row = {"id": f"{split}_{index}", "question": converted(question) if rewrite_column else question,
               "golden_answers": answers, "metadata": {"n": index}, **row}
    return row


def write_pa(path: Path, rows) -> Path:
    """A parquet file written with pyarrow from Python rows (structs and lists as the converters make them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load(root, dataset, split, **kw):
    stats: list[SourceStats] = []
    records = list(load_qa_split(DataConfig(source="local", local_dir=str(root)), dataset, split, stats=stats, **kw))
    return records, [s.as_dict() for s in stats]


def test_flashrag_golden_answers_as_one_string(tmp_path):
    root = tmp_path / "d"
    write_jsonl(root / "nq" / "test.jsonl", [qa(0, golden_answers=" Paris, France "), qa(1)])
    write_pa(root / "popqa" / "test.parquet", [qa(0, golden_answers="Lyon"), qa(1, golden_answers="Nice")])
    recs, [st] = load(root, "nq", "test")
    assert recs[0]["golden_answers"] == ["Paris, France"]           # one answer, never split
    assert st["answers_from"] == {"golden_answers": 1, "golden_answers (one string)": 1}
    recs, [st] = load(root, "popqa", "test")
    assert [r["golden_answers"] for r in recs] == [["Lyon"], ["Nice"]] and st["schema"] == "flashrag"
    with pytest.raises(InputError, match="field 'golden_answers': is blank"):
        validate_qa_record(qa(0, golden_answers="  "), "f", 1)


def test_detect_schema_from_columns():
    assert detect_schema(["id", "question", "golden_answers", "metadata"], "f") == "flashrag"
    assert detect_schema(["data_source", "prompt", "ability", "reward_model", "extra_info"], "f") == "search-r1"
    assert detect_schema(["id", "question", "golden_answers", "data_source", "prompt", "reward_model"],
                         "f") == "search-r1+flashrag"
    with pytest.raises(InputError, match=r"^f: unrecognised QA schema \(columns: query, text\)"):
        detect_schema(["query", "text"], "f")


def test_question_from_prompt():
    assert question_from_prompt(sr1_prompt("who is x?")) == ("who is x?", "")
    assert question_from_prompt(sr1_prompt("who is x?", system=True, newline=False))[0] == "who is x?"
    assert question_from_prompt("Use the tools.\nQuestion: where is y?")[0] == "where is y?"
    for prompt, why in [
        ([{"role": "user", "content": "Question: a?\nQuestion: b?\n"}], "occurs 2 times"),
        ([{"role": "user", "content": "Answer this: who is x?"}], "occurs 0 times"),
        ([{"role": "user", "content": "Question: who is x?\nAnswer:"}], "text follows"),
        ([{"role": "user", "content": "Question:   \n"}], "nothing follows"),
        ([{"role": "user", "content": "Question: a"}, {"role": "user", "content": "Question: b"}], "2 user messages"),
        ({"role": "user"}, "is a dict"),
    ]:
        question, reason = question_from_prompt(prompt)
        assert question is None and why in reason


def test_search_r1_file_with_rewritten_flashrag_columns_is_reported(tmp_path):
    """nq_search.py's output: FlashRAG columns kept, but its question column already rewritten."""
    root = tmp_path / "d"
    rows = [sr1_row("nq", i, f"who wrote book {i}", [f"Author {i}"]) for i in range(3)]
    path = write_pa(root / "nq" / "test.parquet", rows)
    recs, [st] = load(root, "nq", "test")
    assert [r["id"] for r in recs] == ["test_0", "test_1", "test_2"]
    assert recs[1] == {"id": "test_1", "question": "who wrote book 1?", "golden_answers": ["Author 1"],
                       "metadata": {"n": 1}}
    assert st["path"] == str(path) and st["schema"] == "search-r1+flashrag" and st["layout"] == "dataset"
    assert (st["rows_read"], st["rows_kept"], st["complete"]) == (3, 3, True)
    assert st["ids_from"] == {"id": 3} and st["questions_from"] == {"question": 3}
    assert st["answers_from"] == {"golden_answers": 3} and st["data_sources"] == {"nq": 3}
    assert (st["questions_rewritten"], st["questions_maybe_rewritten"]) == (0, 3)
    [warning] = st["warnings"]
    assert "3 questions" in warning and "appends '?'" in warning and "FlashRAG 'question' column" in warning


def test_search_r1_rewrite_beside_original_keeps_the_original(tmp_path):
    """A converter that left FlashRAG's question column alone: the prompt shows the rewrite."""
    root = tmp_path / "d"
    rows = [sr1_row("nq", 0, "  who wrote book 0 ", ["A"], rewrite_column=False),
            sr1_row("nq", 1, "who wrote book 1", ["B"], rewrite_column=False),
            sr1_row("nq", 2, "is it true?", ["yes"], rewrite_column=False)]
    write_pa(root / "nq" / "train.parquet", rows)
    recs, [st] = load(root, "nq", "train")
    assert [r["question"] for r in recs] == ["who wrote book 0", "who wrote book 1", "is it true?"]
    assert (st["questions_rewritten"], st["questions_maybe_rewritten"]) == (2, 1)
    [warning] = st["warnings"]                         # the column is shown to be original: no "maybe" warning
    assert warning.startswith("2 questions were rewritten by a converter")
    # extra_info.question holding the rewrite, no prompt question to read: same outcome
    row = sr1_row("nq", 0, "who is x", ["x"], rewrite_column=False, extra={"question": "who is x?"})
    row["prompt"] = [{"role": "user", "content": "no marker here"}]
    write_pa(root / "nq" / "train.parquet", [row])
    recs, [st] = load(root, "nq", "train")
    assert recs[0]["question"] == "who is x" and st["questions_rewritten"] == 1


@pytest.mark.parametrize("truth, extra, answers, source", [
    (["Paris", " Lutetia "], {}, ["Paris", "Lutetia"], "reward_model.ground_truth"),
    ({"target": ["Paris", "Lutetia"]}, {}, ["Paris", "Lutetia"], "reward_model.ground_truth.target"),
    ("Paris, Lutetia", {"answer": ["Paris", "Lutetia"]}, ["Paris", "Lutetia"], "extra_info.answer"),
    ("Paris", {"answers": ["Paris", "Lutetia"]}, ["Paris", "Lutetia"], "extra_info.answers"),
    ({"target": "Paris"}, {}, ["Paris"], "reward_model.ground_truth.target (one string)"),
    ("Paris", {"answer": "Paris"}, ["Paris"], "reward_model.ground_truth (one string)"),
])
def test_search_r1_answer_placements(tmp_path, truth, extra, answers, source):
    """verl rows without FlashRAG columns: answers in the ground truth (list, target, string) or extra_info."""
    root = tmp_path / "d"
    row = sr1_row("hotpotqa", 7, "where is the louvre", None, split="train", flashrag=False, truth=truth,
                  extra={"question": "where is the louvre?", **extra})
    write_pa(root / "hotpotqa" / "train.parquet", [row])
    recs, [st] = load(root, "hotpotqa", "train")
    assert recs == [{"id": "hotpotqa_train_7", "question": "where is the louvre?", "golden_answers": answers,
                     "metadata": {}}]
    assert st["schema"] == "search-r1" and st["answers_from"] == {source: 1}
    assert st["ids_from"] == {"extra_info.index": 1} and st["questions_from"] == {"extra_info.question": 1}
    assert st["questions_maybe_rewritten"] == 1 and "extra_info.question" in st["warnings"][0]


def test_search_r1_question_only_in_prompt_and_row_ids(tmp_path):
    """verl's re-packaging: a system message, the question at the end of the user message, no id column;
    here without extra_info.index either, so ids are row positions across the shards."""
    root = tmp_path / "d"
    def row(i):
        return {"data_source": "searchR1_musique", "prompt": sr1_prompt(f"what is {i}?", system=True, newline=False),
                "ability": "fact-reasoning", "reward_model": {"style": "rule", "ground_truth": {"target": [str(i)]}},
                "extra_info": {"split": "dev"}}
    write_pa(root / "musique" / "dev-00000-of-00002.parquet", [row(0), row(1)])
    write_pa(root / "musique" / "dev-00001-of-00002.parquet", [row(2)])
    recs, stats = load(root, "musique", "dev")
    assert [(r["id"], r["question"], r["golden_answers"]) for r in recs] == [
        ("row_0", "what is 0?", ["0"]), ("row_1", "what is 1?", ["1"]), ("row_2", "what is 2?", ["2"])]
    assert [s["ids_from"] for s in stats] == [{"row": 2}, {"row": 1}]
    assert stats[0]["questions_from"] == {"prompt": 2} and stats[0]["data_sources"] == {"searchR1_musique": 2}
    assert stats[0]["warnings"] and "from prompt" in stats[0]["warnings"][0]


def test_search_r1_jsonl_file(tmp_path):
    """The same rows as jsonl: the schema is detected from the first record's keys."""
    root = tmp_path / "d"
    write_jsonl(root / "bamboogle" / "test.jsonl", [sr1_row("bamboogle", i, f"q {i}", [f"a {i}"], flashrag=False)
                                                    for i in range(2)])
    recs, [st] = load(root, "bamboogle", "test")
    assert [r["id"] for r in recs] == ["bamboogle_test_0", "bamboogle_test_1"] and recs[0]["question"] == "q 0?"
    assert st["schema"] == "search-r1" and st["questions_from"] == {"prompt": 2}


@pytest.fixture
def merged(tmp_path):
    """Search-R1's published layout: root test.parquet merging several benchmarks' eval splits (each with its
    own index and FlashRAG ids restarting), root train.parquet merging NQ and HotpotQA; plus a dev-only set
    (musique, FlashRAG) in its own folder."""
    root = tmp_path / "sr1"
    test = ([sr1_row("nq", i, f"nq question {i}", [f"nq {i}"]) for i in range(3)]
            + [sr1_row("triviaqa", i, f"tq question {i}", [f"tq {i}"]) for i in range(2)]
            + [sr1_row("hotpotqa", i, f"hp question {i}", [f"hp {i}"]) for i in range(2)]
            + [sr1_row("strategyqa", 0, "is it so", ["yes"])])
    write_pa(root / "test.parquet", test)
    train = ([sr1_row("nq", i, f"nq train {i}", [f"n{i}"], split="train") for i in range(4)]
             + [sr1_row("hotpotqa", i, f"hp train {i}", [f"h{i}"], split="train") for i in range(3)])
    write_pa(root / "train.parquet", train)
    write_jsonl(root / "musique" / "dev.jsonl", [qa(i, "dev") for i in range(2)])
    corpus = write_jsonl(tmp_path / "wiki.jsonl", [passage(i) for i in range(3)])
    return root, corpus


def test_merged_file_split_by_data_source(merged):
    root, _ = merged
    cfg = DataConfig(source="local", local_dir=str(root))
    assert [eval_split(cfg, d) for d in ("nq", "triviaqa", "hotpotqa", "musique")] == ["test", "test", "test", "dev"]
    with pytest.raises(InputError) as e:
        eval_split(cfg, "bamboogle")
    assert f"{root / 'test'}.parquet" in str(e.value) and "data_source is 'bamboogle'" in str(e.value)
    recs, [st] = load(root, "triviaqa", "test")
    assert [(r["id"], r["question"]) for r in recs] == [("test_0", "tq question 0?"), ("test_1", "tq question 1?")]
    assert st["path"] == str(root / "test.parquet") and st["layout"] == "merged"
    assert (st["rows_read"], st["rows_kept"], st["complete"]) == (8, 2, True)
    assert st["rows_dropped"] == {"data_source=hotpotqa": 2, "data_source=nq": 3, "data_source=strategyqa": 1}
    assert st["data_sources"] == {"hotpotqa": 2, "nq": 3, "strategyqa": 1, "triviaqa": 2}
    recs, [st] = load(root, "nq", "test", limit=2)   # the cap counts kept rows; reading stops there
    assert [r["id"] for r in recs] == ["test_0", "test_1"] and (st["rows_read"], st["complete"]) == (2, False)
    recs, _ = load(root, "musique", "dev")
    assert len(recs) == 2


def test_merged_file_duplicates_are_per_dataset(tmp_path):
    root = tmp_path / "d"
    rows = [sr1_row("nq", 0, "a", ["x"]), sr1_row("popqa", 0, "b", ["y"]), sr1_row("nq", 0, "c", ["z"])]
    path = write_pa(root / "test.parquet", rows)
    assert [r["id"] for r in load(root, "popqa", "test")[0]] == ["test_0"]
    with pytest.raises(InputError, match=rf"^{path}:3: field 'id': duplicate id 'test_0' \(first at {path}:1\)"):
        load(root, "nq", "test")


def test_prepare_from_merged_search_r1_files(merged, tmp_path):
    root, corpus = merged
    cfg = DataConfig(source="local", local_dir=str(root), corpus_path=str(corpus),
                     test_sets=("nq", "hotpotqa", "musique"), train_sets=("nq", "hotpotqa"))
    m = prepare_real_data(cfg, tmp_path / "qa", tmp_path / "corpus.jsonl")
    assert {d: (e["split"], e["records"]) for d, e in m["eval"].items()} == {
        "nq": ("test", 3), "hotpotqa": ("test", 2), "musique": ("dev", 2)}
    assert {d: e["records"] for d, e in m["train"].items()} == {"nq": 4, "hotpotqa": 3}
    [src] = m["train"]["hotpotqa"]["sources"]
    assert src["rows_dropped"] == {"data_source=nq": 4} and src["schema"] == "search-r1+flashrag"
    assert src["questions_maybe_rewritten"] == 3 and src["warnings"]
    lines = (tmp_path / "qa" / "hotpotqa" / "test.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {"id": "test_1", "question": "hp question 1?", "golden_answers": ["hp 1"],
                                    "metadata": {"n": 1}}
    json.dumps(m)


def test_layout_conflicts_and_root_files_without_data_source(merged):
    root, _ = merged
    write_jsonl(root / "nq" / "test.jsonl", [qa(0)])     # nq now both in its folder and in the merged file
    with pytest.raises(InputError, match=r"split 'test' is present in several forms .*test\.jsonl.*"
                                         r"test\.parquet \(rows with data_source 'nq'\)"):
        load(root, "nq", "test")
    write_jsonl(root / "test.jsonl", [qa(0)])
    with pytest.raises(InputError, match="present at the root in several forms"):
        load(root, "triviaqa", "test")
    (root / "test.jsonl").unlink()
    (root / "test.parquet").unlink()
    path = write_pa(root / "test.parquet", [qa(0)])      # a FlashRAG file at the root: which dataset?
    with pytest.raises(InputError, match=rf"^{path}: field 'data_source': missing: a file at the root"):
        load(root, "triviaqa", "test")
    path = write_pa(root / "test.parquet", [sr1_row("nq", 0, "a", ["x"]), sr1_row(None, 1, "b", ["y"])])
    with pytest.raises(InputError, match=rf"^{path}:2: field 'data_source': expected a non-blank str, got None"):
        load(root, "triviaqa", "test")


def test_data_source_in_a_dataset_folder(tmp_path):
    root = tmp_path / "d"
    path = write_pa(root / "nq" / "test.parquet", [sr1_row("nq", 0, "a", ["x"]), sr1_row("triviaqa", 0, "b", ["y"])])
    with pytest.raises(InputError, match=rf"^{path}:2: field 'data_source': 'triviaqa' after 'nq': this file "
                                         "holds several datasets; put it at the root"):
        load(root, "nq", "test")
    path = write_pa(root / "nq" / "test.parquet", [sr1_row("triviaqa", 0, "b", ["y"])])
    with pytest.raises(InputError, match=rf"^{path}:1: field 'data_source': data_source 'triviaqa' names dataset "
                                         "'triviaqa', but the file is in the folder of dataset 'nq'"):
        load(root, "nq", "test")
    write_pa(root / "nq" / "test.parquet", [sr1_row("nq_search", 0, "b", ["y"])])   # an unknown tag: kept, noted
    recs, [st] = load(root, "nq", "test")
    assert len(recs) == 1 and "data_source 'nq_search' differs from the folder's dataset name 'nq'" in st["warnings"][0]


@pytest.mark.parametrize("change, field, words", [
    (lambda r: r["reward_model"].update(ground_truth="Paris, Lutetia"), "reward_model.ground_truth",
     "holding ',', and no list of answers beside it"),
    (lambda r: r["reward_model"].update(ground_truth={"answer": ["x"]}), "reward_model.ground_truth",
     "expected a list, a string or {'target': ...}"),
    (lambda r: r["reward_model"].update(ground_truth=None), "reward_model.ground_truth", "missing: no answers"),
    (lambda r: r["reward_model"].update(ground_truth={"target": []}), "reward_model.ground_truth.target", "is empty"),
    (lambda r: r["reward_model"].update(ground_truth={"target": ["x", 3]}), "reward_model.ground_truth.target",
     "item 1: expected str, got int"),
    (lambda r: r["extra_info"].update(answer=["Rome"]), "extra_info.answer", "disagrees with reward_model"),
    (lambda r: r["extra_info"].update(answer="Rome"), "extra_info.answer", "disagrees with reward_model"),
    (lambda r: r.update(prompt=[{"role": "user", "content": "Question: a?\nQuestion: b?"}]), "prompt",
     "'Question:' occurs 2 times"),
    (lambda r: r.update(prompt=[{"role": "user", "content": "Question: who?\nAnswer:"}]), "prompt", "text follows"),
    (lambda r: r.update(prompt=None), "prompt", "there is no prompt"),
    (lambda r: r.update(extra_info=["x"]), "extra_info", "expected an object, got list"),
    (lambda r: r["extra_info"].update(index=True), "extra_info.index", "expected an int"),
])
def test_search_r1_ambiguous_rows_fail_located(tmp_path, change, field, words):
    """Rows (jsonl, so every shape is writable) without FlashRAG columns; the second one is broken."""
    root = tmp_path / "d"
    rows = [sr1_row("nq", i, f"q{i}", ["Paris"], flashrag=False) for i in range(2)]
    change(rows[1])
    path = write_jsonl(root / "nq" / "test.jsonl", rows)
    with pytest.raises(InputError) as e:
        load(root, "nq", "test")
    assert str(e.value).startswith(f"{path}:2: field '{field}': ") and words in str(e.value)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), 2, field)


@pytest.mark.parametrize("change, field, words", [
    (lambda r: r.update(golden_answers=["Rome"]), "reward_model.ground_truth.target", "disagrees with golden_answers"),
    (lambda r: r.update(question="what is the capital of italy?"), "extra_info.question",
     "by more than a converter's rewrite"),
    (lambda r: r.update(question=7), "question", "expected str, got int"),
])
def test_search_r1_with_flashrag_columns_disagreeing_fields_fail(tmp_path, change, field, words):
    root = tmp_path / "d"
    rows = [sr1_row("nq", i, f"q{i}", ["Paris"], extra={"question": f"q{i}?"}) for i in range(2)]
    change(rows[1])
    path = write_jsonl(root / "nq" / "test.jsonl", rows)
    with pytest.raises(InputError) as e:
        load(root, "nq", "test")
    assert str(e.value).startswith(f"{path}:2: field '{field}': ") and words in str(e.value)


def test_prompt_unlike_the_question_column_is_counted_not_fatal(tmp_path):
    root = tmp_path / "d"
    row = sr1_row("nq", 0, "who is x", ["x"], rewrite_column=False)
    row["prompt"] = sr1_prompt("something else entirely")
    write_pa(root / "nq" / "test.parquet", [row])
    recs, [st] = load(root, "nq", "test")
    assert recs[0]["question"] == "who is x" and st["questions_unlike_prompt"] == 1
    assert any("different question in their prompt" in w for w in st["warnings"])


def test_unrecognised_schema_fails_with_the_file(tmp_path):
    root = tmp_path / "d"
    path = write_pa(root / "nq" / "test.parquet", [{"query": "a", "answer": "b"}])
    with pytest.raises(InputError, match=rf"^{path}: unrecognised QA schema \(columns: answer, query\)"):
        load(root, "nq", "test")


def test_file_made_the_way_search_r1_makes_it(tmp_path):
    """The fixture is built as Search-R1's converter builds its files: datasets.map over FlashRAG rows with
    the question rewritten in place, then to_parquet; the loader must flag the rewritten question column."""
    import datasets

    flashrag = datasets.Dataset.from_list([qa(i, question=f"who wrote book {i}") for i in range(3)])   # NQ: no "?"

    def convert(example, idx):
        example["question"] = example["question"].strip()
        if example["question"][-1] != "?":
            example["question"] += "?"
        return {"data_source": "nq", "prompt": sr1_prompt(example["question"]), "ability": "fact-reasoning",
                "reward_model": {"style": "rule", "ground_truth": {"target": example["golden_answers"]}},
                "extra_info": {"split": "test", "index": idx}}

    root = tmp_path / "d"
    root.mkdir()
    flashrag.map(convert, with_indices=True).to_parquet(str(root / "test.parquet"))
    recs, [st] = load(root, "nq", "test")
    assert [r["question"] for r in recs] == ["who wrote book 0?", "who wrote book 1?", "who wrote book 2?"]
    assert recs[0]["golden_answers"] == ["Author 0", "A. 0"] and recs[0]["metadata"] == {"type": "bridge", "n": 0}
    assert st["schema"] == "search-r1+flashrag" and st["layout"] == "merged" and st["ids_from"] == {"id": 3}
    assert st["questions_maybe_rewritten"] == 3 and "FlashRAG 'question' column" in st["warnings"][0]


def test_describe_source_knows_which_files_dvc_watches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                 # the repository root, where DVC runs the stages
    (tmp_path / "data/raw").mkdir(parents=True)
    inside, outside = tmp_path / "data/raw/c.jsonl", tmp_path / "elsewhere.jsonl"
    for f in (inside, outside):
        f.write_text('{"id": "1", "contents": "T\\nx"}\n')
    assert describe_source("data/raw/c.jsonl") == {
        "path": "data/raw/c.jsonl", "bytes": inside.stat().st_size,
        "sha256": hashlib.sha256(inside.read_bytes()).hexdigest(), "dvc_tracked": True}
    assert describe_source(str(outside))["dvc_tracked"] is False
