"""Teachers (searchr2.teacher) and the warm-up set (searchr2.sft_data) on a small hand-made world.

The retriever here is a real (if naive) one: it ranks a handful of passages by shared words, so
the teacher has to read actual results, and a test can make it miss.
"""
import json
from dataclasses import replace
import random
import re

import pytest

from searchr2.metrics import exact_match
from searchr2.refiner import RefinerConfig, answer_token_ids, review_suffix_ids
from searchr2.rollout import RetrievalError, RolloutConfig, Trajectory, rollout
from searchr2.sft_data import SFTDataConfig, build_warmup_data
from searchr2.teacher import (NotApplicable, TeacherFailure, corrupted_trajectory, oracle_trajectory, plan_for,
                              rejection_sample)
from tests.test_rollout import Scripted, check_invariants, tiny  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread

PASSAGES = [
    ("Ana Varo", "Ana Varo is a painter. The spouse of Ana Varo is Ilo Tesk. Ana Varo was born in 1901."),
    ("Ilo Tesk", "Ilo Tesk is a sculptor. Ilo Tesk was born in Orvane Bay. The father of Ilo Tesk is Mira Tesk."),
    ("Mira Tesk", "Mira Tesk founded Kethra University in 1880."),
    ("Orvane Bay", "Orvane Bay is a harbour town founded in 1702."),
    ("Lumsey Dal", "Lumsey Dal is a poet. The spouse of Lumsey Dal is Varen Koltho."),
    ("Varen Koltho", "Varen Koltho is a rower. The father of Varen Koltho is Brel Koltho."),
]


class WordRetriever:
    """Ranks the passages by the number of words shared with the query (ties: corpus order)."""

    def __init__(self, passages=PASSAGES, blind_to=()):
        self.passages = passages
        self.blind_to = set(blind_to)    # queries that return nothing useful
        self.calls = []

    def search(self, queries, k):
        out = []
        for q in queries:
            self.calls.append(q)
            if q in self.blind_to:
                out.append([{"id": "x", "title": "Nothing", "text": "An unrelated note.", "score": 0.0}])
                continue
            words = set(re.findall(r"\w+", q.lower()))
            scored = sorted(range(len(self.passages)), key=lambda i: -len(words & set(
                re.findall(r"\w+", (self.passages[i][0] + " " + self.passages[i][1]).lower()))))
            out.append([{"id": str(i), "title": self.passages[i][0], "text": self.passages[i][1], "score": 1.0}
                        for i in scored[:k]])
        return out


def world_record(rid, question, gold, hops, kind="bridge", **meta):
    return {"id": rid, "question": question, "golden_answers": [gold],
            "metadata": {"type": kind, "hops": [{"subject": s, "relation": r, "object": o} for s, r, o in hops],
                         **meta}}


BRIDGE = world_record("b1", "Who is the father of the spouse of Ana Varo?", "Mira Tesk",
                      [("Ana Varo", "spouse", "Ilo Tesk"), ("Ilo Tesk", "father", "Mira Tesk")])
SINGLE = world_record("s1", "When was Ana Varo born?", "1901", [("Ana Varo", "birth_year", "1901")], kind="single_hop")
CFG = RolloutConfig(max_turns=4, max_new_tokens=200, max_obs_tokens=200, top_k=2, do_sample=False)


def test_plans_are_read_from_the_world_2wiki_and_musique_formats():
    plan = plan_for(BRIDGE)
    assert [h.query for h in plan.hops] == ["Ana Varo spouse", "Ilo Tesk father"]
    assert plan.hops[0].fact == "The spouse of Ana Varo is Ilo Tesk." and not plan.comparison
    wiki = {"id": "w", "question": "Who is the father of the spouse of Ana Varo?", "golden_answers": ["Mira Tesk"],
            "metadata": {"type": "compositional", "evidences": [["Ana Varo", "spouse", "Ilo Tesk"],
                                                                ["Ilo Tesk", "father", "Mira Tesk"]]}}
    assert [h.found for h in plan_for(wiki).hops] == ["Ilo Tesk", "Mira Tesk"]
    musique = {"id": "m", "question": "Who founded the university of the father of Ilo Tesk?",
               "golden_answers": ["Mira Tesk"],
               "metadata": {"question_decomposition": [{"question": "Who is the father of Ilo Tesk?", "answer": "Brel"},
                                                       {"question": "Who is #1's teacher?", "answer": "Mira Tesk"}]}}
    assert plan_for(musique).hops[1].query == "Who is Brel's teacher"
    assert plan_for({"id": "n", "question": "q?", "golden_answers": ["a"], "metadata": {}}) is None
    broken = world_record("x", "q?", "Somebody Else", [("Ana Varo", "spouse", "Ilo Tesk")])
    assert plan_for(broken) is None   # the chain does not end at the gold answer


def test_oracle_trajectory_is_the_engines_layout_token_for_token(tiny):
    model, tok = tiny
    retriever = WordRetriever()
    teacher = oracle_trajectory(plan_for(BRIDGE), BRIDGE["question"], tok, retriever, CFG)
    check_invariants(teacher, tok)
    assert teacher.finished and teacher.answer == "Mira Tesk" and teacher.searches == ["Ana Varo spouse",
                                                                                       "Ilo Tesk father"]
    turns = [tok.decode(teacher.token_ids[s["start"]:s["end"]]) for s in teacher.steps if s["kind"] == "assistant"]
    assert "The spouse of Ana Varo is Ilo Tesk." in turns[1]   # it read the first result before the bridge search
    # the engine, made to write exactly the teacher's turns, produces the same ids and mask
    engine = rollout(Scripted(model, tok, lambda q, turn: turns[turn]), tok, WordRetriever(), [BRIDGE["question"]],
                     CFG)[0]
    assert engine.token_ids == teacher.token_ids and engine.loss_mask == teacher.loss_mask
    assert engine.steps == teacher.steps and engine.answer == teacher.answer


def test_a_retriever_miss_is_said_and_requeried(tiny):
    _, tok = tiny
    retriever = WordRetriever(blind_to={"Ana Varo spouse"})
    t = oracle_trajectory(plan_for(BRIDGE), BRIDGE["question"], tok, retriever, CFG)
    assert t.searches == ["Ana Varo spouse", "Ana Varo", "Ilo Tesk father"] and t.answer == "Mira Tesk"
    assert "do not give the spouse of Ana Varo" in t.generated_text(tok)
    with pytest.raises(TeacherFailure) as e:   # nothing ever shows the fact
        oracle_trajectory(plan_for(SINGLE), SINGLE["question"], tok,
                          WordRetriever(blind_to={"Ana Varo birth year", "Ana Varo", SINGLE["question"]}), CFG)
    assert e.value.reason == "retriever_miss"
    with pytest.raises(TeacherFailure) as e:   # too few turns for two hops and an answer
        oracle_trajectory(plan_for(BRIDGE), BRIDGE["question"], tok, WordRetriever(),
                          RolloutConfig(max_turns=1, max_new_tokens=200, max_obs_tokens=200, top_k=2, do_sample=False))
    assert e.value.reason == "turn_budget"
    with pytest.raises(TeacherFailure) as e:   # a turn longer than the Actor may write in one rollout turn
        oracle_trajectory(plan_for(BRIDGE), BRIDGE["question"], tok, WordRetriever(),
                          RolloutConfig(max_new_tokens=8, max_obs_tokens=200, top_k=2, do_sample=False))
    assert e.value.reason == "turn_too_long"


def test_a_down_retriever_is_a_clear_error(tiny):
    _, tok = tiny

    class Down:
        def search(self, queries, k):
            raise ConnectionError("retrieval server refused the connection")

    with pytest.raises(RetrievalError, match="refused"):
        oracle_trajectory(plan_for(SINGLE), SINGLE["question"], tok, Down(),
                          RolloutConfig(retries=0, max_new_tokens=200, max_obs_tokens=200, do_sample=False))


@pytest.mark.parametrize("train_on_mistake", [False, True])
def test_mistakes_are_followed_by_recovery_and_masked_by_default(tiny, train_on_mistake):
    _, tok = tiny
    t = oracle_trajectory(plan_for(BRIDGE), BRIDGE["question"], tok, WordRetriever(), CFG, mistake="wrong_bridge",
                          rng=random.Random(0), distractors=["Lumsey Dal"], train_on_mistake=train_on_mistake)
    assert t.searches == ["Ana Varo spouse", "Lumsey Dal father", "Ilo Tesk father"] and t.answer == "Mira Tesk"
    turns = [s for s in t.steps if s["kind"] == "assistant"]
    mistaken = turns[1]
    assert set(t.loss_mask[mistaken["start"]:mistaken["end"]]) == {int(train_on_mistake)}
    assert set(t.loss_mask[turns[2]["start"]:turns[2]["end"]]) == {1}
    assert "That was a mistake: The spouse of Ana Varo is Ilo Tesk." in tok.decode(
        t.token_ids[turns[2]["start"]:turns[2]["end"]])
    v = oracle_trajectory(plan_for(SINGLE), SINGLE["question"], tok, WordRetriever(blind_to={"birth year"}), CFG,
                          mistake="vague_query")
    assert v.searches == ["birth year", "Ana Varo birth year"] and v.answer == "1901"
    assert not issubclass(NotApplicable, ValueError)   # sft_data catches it and must not swallow real errors
    with pytest.raises(NotApplicable):   # no bridge in a one-hop question
        oracle_trajectory(plan_for(SINGLE), SINGLE["question"], tok, WordRetriever(), CFG, mistake="wrong_bridge",
                          distractors=["Lumsey Dal"])


def test_corrupted_trajectories_know_their_first_flawed_step(tiny):
    _, tok = tiny
    plan = plan_for(BRIDGE)
    t, step = corrupted_trajectory(plan, BRIDGE["question"], tok, WordRetriever(), CFG, "wrong_bridge",
                                   random.Random(0), ["Lumsey Dal"], ["Brel Koltho", "Mira Tesk"])
    assert step == 2 and t.searches == ["Ana Varo spouse", "Lumsey Dal father"]
    assert t.answer == "Brel Koltho" and not exact_match(t.answer, BRIDGE["golden_answers"])
    t, step = corrupted_trajectory(plan, BRIDGE["question"], tok, WordRetriever(), CFG, "wrong_answer",
                                   random.Random(0), ["Lumsey Dal"], ["Brel Koltho"])
    assert step == 3 == t.turns and t.searches == ["Ana Varo spouse", "Ilo Tesk father"] and t.answer == "Brel Koltho"
    t, step = corrupted_trajectory(plan_for(SINGLE), SINGLE["question"], tok, WordRetriever(), CFG, "wrong_query",
                                   random.Random(0), ["Varen Koltho"], ["1955"])
    assert step == 1 and t.searches == ["Varen Koltho birth year"] and t.answer == "1955"
    with pytest.raises(NotApplicable):
        corrupted_trajectory(plan_for(SINGLE), SINGLE["question"], tok, WordRetriever(), CFG, "wrong_bridge",
                             random.Random(0), ["Varen Koltho"], ["1955"])


def test_rejection_sampling_keeps_the_first_correct_sample():
    records = [{"id": "a", "question": "q1?", "golden_answers": ["yes"]},
               {"id": "b", "question": "q2?", "golden_answers": ["x"]}]

    def sample(questions):
        answers = iter(["no", "Yes", "yes", "y", "z", "w"])
        return [Trajectory(question=q, token_ids=[1], loss_mask=[0], prompt_len=1, answer=next(answers),
                           finished=True) for q in questions]

    kept = rejection_sample(records, sample, samples=3)
    assert list(kept) == ["a"] and kept["a"].answer == "Yes"   # the first EM-1 sample of a; none for b
    with pytest.raises(ValueError):
        rejection_sample(records, lambda qs: [], samples=3)


def _records(n):
    """n bridge questions over two families (alternating), distinct ids."""
    recs = []
    for i in range(n):
        if i % 2:
            recs.append(world_record(f"r{i}", f"Who is the father of the spouse of Lumsey Dal {i}?", "Brel Koltho",
                                     [("Lumsey Dal", "spouse", "Varen Koltho"), ("Varen Koltho", "father", "Brel Koltho")]))
        else:
            recs.append(dict(BRIDGE, id=f"r{i}", question=f"Who is the father of the spouse of Ana Varo {i}?"))
    return recs


def test_build_keeps_correct_actor_data_and_disjoint_balanced_refiner_sets(tiny):
    _, tok = tiny
    cfg = SFTDataConfig(seed=3, actor_examples=6, mistake_share=0.5, refiner_examples=6, refiner_clean_share=0.5,
                        refiner_heldout=4, actor_decisions=True, refiner_top_k=0)
    no_chain = {"id": "nc", "question": "Is it raining?", "golden_answers": ["no"], "metadata": {}}
    recs = _records(40) + [no_chain]
    actor, refiner, heldout, stats = build_warmup_data(recs, tok, WordRetriever(), CFG, RefinerConfig(obs_tokens=40),
                                                       cfg)
    assert len(actor) == 6 and len(refiner) == 6 and len(heldout) == 4
    golds = {r["id"]: r["golden_answers"] for r in recs}
    assert all(exact_match(a["answer"], golds[a["id"]]) for a in actor)
    ids = [{r["id"] for r in part} for part in (actor, refiner, heldout)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(r["label"] == 0 for r in refiner) == 3 and sum(r["label"] == 0 for r in heldout) == 2
    for r in refiner + heldout:
        assert r["loss_mask"] == [0] * (len(r["token_ids"]) - 1) + [1]
        assert 0 <= r["label"] <= r["n_steps"]
    assert stats["actor"] == 6 and stats["refiner_labels"]["0"] == 3 and stats["actor_with_mistake"] >= 1
    for r in refiner + heldout:
        assert r["decisions"] == [len(r["token_ids"]) - 1]
    # actor_decisions (inline layout): a clean Actor trajectory also trains the refiner's "accept" in its row
    accept = {n: answer_token_ids(tok, n)[0] for n in range(1, 6)}
    for a in actor:
        if a["mistake"] is None:
            review = review_suffix_ids(tok, a["turns"]) + [accept[a["turns"]]]
            assert a["token_ids"][-len(review):] == review and a["decisions"] == [len(a["token_ids"]) - 1]
            assert a["loss_mask"][-len(review):] == [0] * (len(review) - 1) + [1]
        else:
            assert "decisions" not in a
    assert stats["actor_with_decision"] == sum(a["mistake"] is None for a in actor) >= 1
    plain = build_warmup_data(recs, tok, WordRetriever(), CFG, RefinerConfig(obs_tokens=40),
                              replace(cfg, actor_decisions=False))[0]
    for a, b in zip(actor, plain):
        cut = len(b["token_ids"])
        assert a["token_ids"][:cut] == b["token_ids"] and "decisions" not in b
    assert json.dumps(stats)  # a metrics file
    again = build_warmup_data(recs, tok, WordRetriever(), CFG, RefinerConfig(obs_tokens=40), cfg)
    assert [a["token_ids"] for a in again[0]] == [a["token_ids"] for a in actor]   # the seed decides everything


def test_refiner_top_k_shortens_only_the_training_examples(tiny):
    """sft_data.refiner_top_k: the refiner's training meta prompts show fewer documents per search; the
    held-out ones (the accuracy test) keep rollout.top_k, token for token."""
    _, tok = tiny
    cfg = SFTDataConfig(seed=3, actor_examples=2, refiner_examples=6, refiner_clean_share=0.5, refiner_heldout=4,
                        refiner_top_k=0)
    recs, wide = _records(30), replace(CFG, top_k=3)
    _, full, heldout, _ = build_warmup_data(recs, tok, WordRetriever(), wide, RefinerConfig(), cfg)
    _, short, heldout_short, _ = build_warmup_data(recs, tok, WordRetriever(), wide, RefinerConfig(),
                                                   replace(cfg, refiner_top_k=2))
    assert [r["token_ids"] for r in heldout_short] == [r["token_ids"] for r in heldout]
    assert len(short) == len(full) == 6 and sum(r["label"] == 0 for r in short) == 3
    assert all("Doc 2(" in r["trajectory"] and "Doc 3(" not in r["trajectory"] for r in short)
    assert any("Doc 3(" in r["trajectory"] for r in full) and any("Doc 3(" in r["trajectory"] for r in heldout_short)
    assert sum(map(len, (r["token_ids"] for r in short))) < sum(map(len, (r["token_ids"] for r in full)))
    with pytest.raises(ValueError, match="refiner_top_k must be an int >= 0"):
        SFTDataConfig(refiner_top_k=-1)


def test_records_without_a_hop_chain_go_to_the_rejection_sampler(tiny):
    _, tok = tiny
    recs = [{"id": f"n{i}", "question": f"Is {i} even?", "golden_answers": ["yes" if i % 2 == 0 else "no"],
             "metadata": {}} for i in range(4)]

    def make_sampler():
        def sample(questions):
            return [Trajectory(question=q, token_ids=[1, 2], loss_mask=[0, 1], prompt_len=1, answer="yes",
                               finished=True) for q in questions]
        return sample

    actor, _, _, stats = build_warmup_data(recs, tok, WordRetriever(), CFG, RefinerConfig(),
                                           SFTDataConfig(actor_examples=4, refiner_examples=0, refiner_heldout=0),
                                           make_sampler)
    assert {a["id"] for a in actor} == {"n0", "n2"} and all(a["source"] == "rejection" for a in actor)
    assert stats["rejection"] == {"tried": 4, "kept": 2}
    with pytest.raises(ValueError, match="no hop chain"):
        build_warmup_data(recs, tok, WordRetriever(), CFG, RefinerConfig(),
                          SFTDataConfig(actor_examples=4, refiner_examples=0, refiner_heldout=0))


def test_the_warm_up_teacher_keeps_searching_turns():
    """sft_data.teacher_max_turns is the teacher's own budget (a no-search RL run keeps the searching
    warm-up); a teacher without searches would teach nothing and is refused."""
    assert SFTDataConfig().teacher_max_turns == 4
    with pytest.raises(ValueError, match="teacher_max_turns must be an int >= 1"):
        SFTDataConfig(teacher_max_turns=0)
