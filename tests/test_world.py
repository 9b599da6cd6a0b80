"""The embedded world: deterministic, well-formed, learnable, and impossible to answer without search."""
import dataclasses
import hashlib
import json
import re
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from searchr2.data import PAPER_EVAL_SPLITS, PAPER_TRAIN_SETS
from searchr2.world import WorldConfig, generate_world, write_world

ROOT = Path(__file__).resolve().parents[1]
SMALL = WorldConfig(seed=7, n_entities=700, mentions_per_entity=1.5, train_questions=300, test_questions=80,
                    bamboogle_questions=30, comparison_share=0.25)
POPQA_RELATIONS = {"occupation", "place of birth", "director", "genre", "father", "country", "producer", "capital",
                   "screenwriter", "composer", "author", "mother", "sport", "religion"}


def norm(text):
    text = re.sub(f"[{re.escape(string.punctuation)}]", " ", text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    world = generate_world(SMALL)
    manifest = write_world(world, out / "qa", out / "corpus.jsonl")
    corpus = {}
    for line in (out / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        corpus[rec["id"]] = rec["contents"]
    sets = {}
    for path in sorted((out / "qa").glob("*/*.jsonl")):
        sets[f"{path.parent.name}/{path.stem}"] = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]
    return world, manifest, corpus, sets, out


def test_config_is_validated():
    for bad in (dict(n_entities=0), dict(n_entities=50), dict(test_questions=-1), dict(train_questions=0),
                dict(comparison_share=1.5), dict(comparison_share=-0.1), dict(mentions_per_entity=-1)):
        with pytest.raises(ValueError, match=f"world.{next(iter(bad))}"):
            WorldConfig(**bad)


def test_same_config_gives_identical_bytes_across_processes(written, tmp_path):
    _, _, _, _, out = written
    # another interpreter with another hash seed must write the very same files
    code = ("import sys; from pathlib import Path; from searchr2.world import *; import dataclasses; "
            f"cfg = WorldConfig(**{dataclasses.asdict(SMALL)!r}); o = Path(sys.argv[1]); "
            "write_world(generate_world(cfg), o / 'qa', o / 'corpus.jsonl')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, check=True, capture_output=True,
                   env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert tree_digest(tmp_path) == tree_digest(out)
    other = generate_world(dataclasses.replace(SMALL, seed=8))
    assert other.passages[0].contents != written[0].passages[0].contents


def test_sizes_layout_and_manifest(written):
    world, manifest, corpus, sets, _ = written
    expected = {f"{d}/{s}": (SMALL.bamboogle_questions if d == "bamboogle" else SMALL.test_questions)
                for d, s in PAPER_EVAL_SPLITS.items()}
    n_nq = round(SMALL.train_questions * 79168 / 169615)
    expected.update({"nq/train": n_nq, "hotpotqa/train": SMALL.train_questions - n_nq})
    assert {k: len(v) for k, v in sets.items()} == expected == manifest["qa"]
    assert set(PAPER_TRAIN_SETS) == {"nq", "hotpotqa"}
    assert manifest["n_passages"] == len(corpus) == len(world.passages)
    assert manifest["n_entities"] == SMALL.n_entities == sum(manifest["entities_by_type"].values())
    assert manifest["passages_by_kind"]["mention"] == round(SMALL.mentions_per_entity * SMALL.n_entities)
    assert manifest["config"] == dataclasses.asdict(SMALL)
    json.dumps(manifest)  # the stage saves it as JSON
    # comparison share honoured exactly in hotpotqa (quotas), split between the two 2wiki comparison kinds
    hotpot = Counter(r["metadata"]["type"] for r in sets["hotpotqa/dev"])
    assert hotpot["comparison"] == round(SMALL.comparison_share * SMALL.test_questions)
    wiki = Counter(r["metadata"]["type"] for r in sets["2wikimultihopqa/dev"])
    assert wiki["comparison"] + wiki["bridge_comparison"] == round(SMALL.comparison_share * SMALL.test_questions)
    assert {"compositional", "inference"} <= set(wiki)
    assert set(Counter(r["metadata"]["type"] for r in sets["musique/dev"])) == {"2hop", "3hop", "4hop"}


def test_corpus_format(written):
    world, _, corpus, _, _ = written
    assert list(corpus) == [str(i) for i in range(len(corpus))]
    for pid, contents in corpus.items():
        m = re.fullmatch(r'"([^"\n]+)"\n([^\n]+)', contents)
        assert m, f"passage {pid} is not '\"Title\"\\ntext': {contents[:80]!r}"
        assert 40 <= len(m.group(2).split()) <= 90, f"passage {pid} has {len(m.group(2).split())} words"
    names = [e.name.lower() for e in world.entities]
    assert len(set(names)) == len(names), "entity names must be unique"
    mains = {p.entity: p for p in world.passages if p.kind == "main"}
    for e in world.entities:                        # each entity has one main passage, titled with its name
        assert corpus[mains[e.idx].id].startswith(f'"{e.name}"\n'), e.name
    assert any(p.kind == "section" for p in world.passages) and any(p.kind == "mention" for p in world.passages)


def test_every_record_has_the_schema(written):
    _, _, corpus, sets, _ = written
    ids = set()
    for name, records in sets.items():
        for rec in records:
            assert set(rec) == {"id", "question", "golden_answers", "metadata"}, name
            assert isinstance(rec["id"], str) and rec["id"] not in ids
            ids.add(rec["id"])
            assert isinstance(rec["question"], str) and rec["question"].strip()
            assert rec["golden_answers"] and all(isinstance(a, str) and a for a in rec["golden_answers"])
            meta = rec["metadata"]
            assert isinstance(meta["type"], str) and meta["hops"] and meta["supporting_passage_ids"]
            for hop in meta["hops"]:
                assert {"subject", "relation", "object", "passage_id"} <= set(hop)
                assert hop["passage_id"] in corpus
            assert meta["supporting_passage_ids"] == list(dict.fromkeys(h["passage_id"] for h in meta["hops"]))
        if name.startswith("nq/"):
            assert all(r["question"] == r["question"].lower() and not r["question"].endswith("?") for r in records)
        else:
            assert all(r["question"].endswith("?") for r in records), name


def test_every_hop_is_stated_in_its_passage_and_the_chain_gives_the_answer(written):
    _, _, corpus, sets, _ = written
    for name, records in sets.items():
        for rec in records:
            meta, hops = rec["metadata"], rec["metadata"]["hops"]
            for hop in hops:
                text = corpus[hop["passage_id"]]
                title = text.split("\n", 1)[0]
                assert title.startswith(f'"{hop["subject"]}'), (rec["id"], hop)   # a passage about the subject
                assert hop["object"] in text.split("\n", 1)[1], (rec["id"], hop, text)
            if "comparison" not in meta:
                for a, b in zip(hops, hops[1:]):
                    assert a["object"] == b["subject"], rec["id"]
                assert hops[-1]["object"] == rec["golden_answers"][0]
                assert [h["relation"] for h in hops] == meta["relation_chain"]
            else:                                     # recompute the comparison from the two hop chains
                k = len(meta["relation_chain"])
                left, right = hops[k - 1]["object"], hops[2 * k - 1]["object"]
                a, b = meta["comparison"]["options"]
                op = meta["comparison"]["operator"]
                if op == "same":
                    expected = "yes" if left == right else "no"
                else:
                    assert left != right
                    first_wins = (int(left) < int(right)) == (op == "min")
                    expected = a if first_wins else b
                assert rec["golden_answers"] == [expected], rec


def test_sets_and_splits_share_no_question_and_no_fact_chain(written):
    _, _, _, sets, _ = written
    seen_q, seen_key = {}, {}
    for name, records in sets.items():
        for rec in records:
            meta = rec["metadata"]
            q = norm(rec["question"])
            assert q not in seen_q, (name, rec["question"], seen_q.get(q))
            seen_q[q] = name
            subjects = meta["subject_id"] if isinstance(meta["subject_id"], list) else [meta["subject_id"]]
            key = (tuple(sorted(subjects)), tuple(meta["relation_chain"]))
            assert key not in seen_key, (name, key, seen_key.get(key))
            seen_key[key] = name


def test_answers_cannot_be_guessed_from_the_question(written):
    _, _, _, sets, _ = written
    first, yes_no = [], Counter()
    for name, records in sets.items():
        answers = Counter(norm(r["golden_answers"][0]) for r in records)
        top, _ = answers.most_common(1)[0]
        score = sum(top in {norm(a) for a in r["golden_answers"]} for r in records) / len(records)
        assert score < 0.10, f"{name}: always answering {top!r} scores {score:.2f}"
        for rec in records:
            meta = rec["metadata"]
            if "comparison" in meta:
                if meta["answer_type"] == "option":
                    assert rec["golden_answers"][0] in meta["comparison"]["options"]
                    first.append(rec["golden_answers"][0] == meta["comparison"]["options"][0])
                else:
                    yes_no[rec["golden_answers"][0]] += 1
            else:
                for ans in rec["golden_answers"]:
                    assert norm(ans) not in norm(rec["question"]), (rec["question"], ans)
    assert len(first) >= 20 and 0.4 <= sum(first) / len(first) <= 0.6, (sum(first), len(first))
    assert set(yes_no) == {"yes", "no"} and abs(yes_no["yes"] - yes_no["no"]) <= 4, yes_no


def test_popqa_asks_long_tail_subjects_with_popqa_relations(written):
    _, _, _, sets, _ = written
    mean = lambda recs: sum(r["metadata"]["subject_mentions"] for r in recs) / len(recs)
    assert mean(sets["popqa/test"]) < 0.5 * mean(sets["nq/test"])
    assert {r["metadata"]["popqa_relation"] for r in sets["popqa/test"]} <= POPQA_RELATIONS
    assert len({r["metadata"]["popqa_relation"] for r in sets["popqa/test"]}) >= 10


def test_family_and_dates_are_consistent(written):
    world = written[0]
    E = world.entities
    n_parents = 0
    for e in (e for e in E if e.type == "person"):
        a = e.attrs
        if "father" in a:
            n_parents += 1
            father, mother = E[a["father"]], E[a["mother"]]
            assert father.gender == "m" and mother.gender == "f"
            assert father.attrs["birth_year"] <= a["birth_year"] - 20 and mother.attrs["birth_year"] <= a["birth_year"] - 18
            assert father.attrs.get("spouse") == mother.idx
            assert e.name.split(" ", 1)[1] == father.name.split(" ", 1)[1]   # the surname is inherited
        if "spouse" in a:
            assert E[a["spouse"]].attrs["spouse"] == e.idx and E[a["spouse"]].gender != e.gender
        assert a["nationality"] == E[a["birthplace"]].attrs["country"]
    assert n_parents > 0.3 * sum(e.type == "person" for e in E)
    for e in (e for e in E if e.type == "film"):
        assert e.attrs["release_year"] >= E[e.attrs["director"]].attrs["birth_year"] + 25
        assert E[e.attrs["director"]].attrs["occupation"] == "film director"
    for e in (e for e in E if e.type == "country"):
        assert E[e.attrs["capital"]].attrs["country"] == e.idx


def test_a_too_small_world_names_the_set_it_cannot_fill():
    cfg = WorldConfig(n_entities=100, train_questions=4000, test_questions=5, bamboogle_questions=5)
    with pytest.raises(ValueError, match=r"set '(nq|hotpotqa)/train' needs \d+ distinct questions but only \d+ could"):
        generate_world(cfg)
