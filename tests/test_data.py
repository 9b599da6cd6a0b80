"""Tests for searchr2.data: FlashRAG QA loaders (local and hub), the split rule, and the wiki-18 corpus stream."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from searchr2.corpus import iter_source_passages
from searchr2.data import (PAPER_EVAL_SPLITS, PAPER_TEST_SETS, DataConfig, HubError, eval_split, first_eval_split,
                           load_qa_split, load_train_records, prepare_real_data, read_qa_file, validate_qa_record,
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
    ({"golden_answers": None}, "golden_answers", "expected list or tuple, got NoneType"),
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
    ('{"id": "2", "contents": "no title line"}', 3, "field 'contents': must start with a quoted title"),
    ('{"id": "2", "contents": "Title\\ntext"}', 3, "field 'contents': must start with a quoted title"),
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
    assert m["eval"] == {
        "nq": {"split": "test", "records": 3, "path": str(qa_dir / "nq" / "test.jsonl")},
        "hotpotqa": {"split": "dev", "records": 3, "path": str(qa_dir / "hotpotqa" / "dev.jsonl")}}
    assert m["train"]["nq"]["records"] == 5 and m["train"]["hotpotqa"]["records"] == 5
    assert m["corpus"]["passages"] == 10
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
