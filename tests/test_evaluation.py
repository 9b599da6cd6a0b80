"""Evaluation (searchr2.evaluation) and the Direct / RAG baselines (searchr2.baselines)."""
import json

import pytest
import torch

from searchr2.baselines import answer_baseline, answer_direct, answer_rag, reply_prediction
from searchr2.data import eval_split_path, load_eval_set
from searchr2.evaluation import (EvalConfig, average, merge_model_results, run_system, set_scores, summarize,
                                 system_model, with_intervals)
from searchr2.stats import questions_digest
from searchr2.io import InputError
from searchr2.models import ModelConfig, TinyModelConfig, load_model, load_tokenizer, materialize_base_model
from searchr2.rollout import RolloutConfig, Trajectory


class FakeRetriever:
    def __init__(self):
        self.calls = []

    def search(self, queries, k):
        self.calls.append(list(queries))
        return [[{"id": str(i), "title": f"Page {i}", "text": f"Text about {q}", "score": 1.0} for i in range(k)]
                for q in queries]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": f'"Page {i}"\nPage {i} is about Mira Tesk.'}) + "\n"
                              for i in range(100)))
    materialize_base_model(ModelConfig(source="tiny", seed=2, tiny=TinyModelConfig(vocab_size=300)), root / "m", corpus)
    torch.set_num_threads(1)
    return load_model(root / "m"), load_tokenizer(root / "m")


def _fake_traj(question, answer, searches=0, turns=1):
    return Trajectory(question=question, token_ids=[1, 2, 3], loss_mask=[0, 1, 1], prompt_len=1,
                      searches=["q"] * searches, answer=answer, turns=turns, finished=True, stop_reason="answer")


def test_summary_scores_are_percent_and_average_is_unweighted():
    sets = {"a": [{"id": "1", "question": "q1", "golden_answers": ["Mira Tesk"]},
                  {"id": "2", "question": "q2", "golden_answers": ["1901"]}],
            "b": [{"id": "3", "question": "q3", "golden_answers": ["yes"]}]}
    answers = {"q1": "mira tesk", "q2": "1902", "q3": "Yes."}

    class Tok:
        def decode(self, ids, **kw):
            return "text"

    rows, summary, timing = run_system(lambda qs: [_fake_traj(q, answers[q], searches=2) for q in qs], sets, Tok(),
                                       chunk_size=1, desc="t")
    assert summary["a"]["em"] == 50.0 and summary["b"]["em"] == 100.0
    assert summary["avg"]["em"] == 75.0                     # mean of sets, not of questions (66.67)
    assert summary["a"]["searches"] == 2 and summary["a"]["answered"] == 1.0
    assert rows["a"][1]["prediction"] == "1902" and rows["a"][1]["em"] == 0.0
    assert timing["questions"] == 3 and timing["generated_tokens"] == 6
    # per-question scores for the intervals and paired comparisons, tied to the questions asked
    assert summary["a"]["em_by_question"] == "10" and summary["b"]["em_by_question"] == "1"
    assert summary["a"]["questions_sha"] == questions_digest(["1", "2"]) != summary["b"]["questions_sha"]


def test_intervals_are_added_from_the_per_question_scores():
    per_set = {"a": {"em": 50.0, "n": 4, "em_by_question": "1100"}, "b": {"em": 100.0, "n": 2, "em_by_question": "11"},
               "avg": {"em": 75.0}}
    out = with_intervals(per_set, 500, 0)
    assert out["b"]["em_ci95"] == [100.0, 100.0] and out["a"]["em_ci95"][0] < 50.0 < out["a"]["em_ci95"][1]
    assert out["avg"]["em_ci95"][0] < 75.0 < out["avg"]["em_ci95"][1] and out["avg"]["em"] == 75.0
    assert "em_ci95" not in per_set["a"]                       # the input is left as it was
    old = {"a": {"em": 50.0, "n": 4}, "avg": {"em": 50.0}}     # scored before per-question scores were kept
    assert with_intervals(old, 500, 0) == old
    with pytest.raises(ValueError, match=r"a.em_by_question: expected a string of 0 and 1"):
        with_intervals({"a": {"em": 50.0, "em_by_question": "1x"}}, 10, 0)


def test_the_sets_are_pooled_into_chunks_and_split_back():
    """The engine gets questions of several sets in one call (fuller batches); rows come back per set, in order."""
    sets = {"a": [{"id": str(i), "question": f"a{i}", "golden_answers": ["x"]} for i in range(3)],
            "b": [{"id": str(i), "question": f"b{i}", "golden_answers": ["x"]} for i in range(4)]}
    calls = []

    class Tok:
        def decode(self, ids, **kw):
            return "text"

    def answer(questions):
        calls.append(list(questions))
        return [_fake_traj(q, q) for q in questions]

    rows, summary, timing = run_system(answer, sets, Tok(), chunk_size=5, desc="t")
    assert calls == [["a0", "a1", "a2", "b0", "b1"], ["b2", "b3"]]
    assert [r["prediction"] for r in rows["a"]] == ["a0", "a1", "a2"]
    assert [r["prediction"] for r in rows["b"]] == ["b0", "b1", "b2", "b3"]
    assert summary["a"]["n"] == 3 and summary["b"]["n"] == 4 and timing["questions"] == 7


def test_no_answer_scores_zero():
    row = {"id": "q1", "prediction": None, "em": 0.0, "f1": 0.0, "cover_em": 0.0, "searches": [], "turns": 5}
    assert set_scores([row])["answered"] == 0.0 and average({"x": set_scores([row])})["em"] == 0.0


def test_eval_split_path_prefers_test_then_dev(tmp_path):
    (tmp_path / "hotpotqa").mkdir()
    (tmp_path / "hotpotqa" / "dev.jsonl").write_text("")
    assert eval_split_path(tmp_path, "hotpotqa").name == "dev.jsonl"
    (tmp_path / "hotpotqa" / "test.jsonl").write_text("")
    assert eval_split_path(tmp_path, "hotpotqa").name == "test.jsonl"
    with pytest.raises(InputError, match="no test.jsonl or dev.jsonl; run the `world` stage"):
        eval_split_path(tmp_path, "musique")


def test_load_eval_set_caps_and_locates_bad_records(tmp_path):
    d = tmp_path / "nq"
    d.mkdir()
    good = [{"id": str(i), "question": f"q{i}", "golden_answers": ["a"]} for i in range(5)]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    assert [r["id"] for r in load_eval_set(tmp_path, "nq", 3)] == ["0", "1", "2"]
    (d / "test.jsonl").write_text(json.dumps(good[0]) + "\n" + json.dumps({"id": "x", "question": "q"}) + "\n")
    with pytest.raises(InputError, match=r"nq/test.jsonl:2: field 'golden_answers'"):
        load_eval_set(tmp_path, "nq", None)
    (d / "test.jsonl").write_text("")
    with pytest.raises(InputError, match="the eval set is empty"):
        load_eval_set(tmp_path, "nq", None)


def test_eval_config_rejects_unknown_systems():
    with pytest.raises(ValueError, match="unknown system 'bm25'"):
        EvalConfig(systems=("direct", "bm25"))
    with pytest.raises(ValueError, match="unknown system 'agent_ppo'"):      # no stage evaluates such a model
        EvalConfig(systems=("agent_ppo",))
    with pytest.raises(ValueError, match="twice"):
        EvalConfig(systems=("rag", "agent_rl", "rag"))
    assert EvalConfig(systems=("agent_sft",)).systems == ("agent_sft",)


def test_systems_map_to_the_model_whose_stage_evaluates_them():
    assert [system_model(s) for s in ("direct", "rag", "agent_base", "agent_sft", "agent_rl")] == [
        "base", "base", "base", "sft", "rl"]


def test_merge_model_results_orders_systems_and_names_a_missing_part(tmp_path):
    scores = {"nq": {"em": 10.0}, "avg": {"em": 10.0}}
    parts = {"base": {"direct": scores, "agent_base": scores}, "sft": {}, "rl": {"agent_rl": scores}}
    where = {m: tmp_path / m / "metrics.json" for m in parts}
    refiner = {"base": {"exact": 0.1}, "sft": {}, "rl": {"exact": 0.5}}          # sft: nothing was scored
    merged = merge_model_results(parts, ("agent_rl", "direct"), where, refiner)
    assert list(merged) == ["agent_rl", "direct", "refiner"]          # the params' order, then the refiner
    assert merged["refiner"] == {"base": {"exact": 0.1}, "rl": {"exact": 0.5}}
    with pytest.raises(InputError, match=r"sft/metrics.json: field 'agent_sft': no results .*evaluate@sft"):
        merge_model_results(parts, ("direct", "agent_sft"), where)


def test_summary_keeps_the_compared_numbers_only():
    merged = {"agent_rl": {"nq": {"em": 40.0, "f1": 42.5, "n": 20, "searches": 1.9},
                           "popqa": {"em": 45.0, "f1": 45.0, "n": 20}, "avg": {"em": 42.5, "f1": 43.75}},
              "direct": {"nq": {"em": 5.0, "n": 20}, "popqa": {"em": 0.0, "n": 20}, "avg": {"em": 2.5}},
              "refiner": {"sft": {"auc": 0.55, "exact": 0.5, "n": 60, "seconds": 72.6, "revise_rate": 0.0}}}
    summary = summarize(merged)
    assert summary == {"em": {"agent_rl": {"nq": 40.0, "popqa": 45.0, "avg": 42.5},
                              "direct": {"nq": 5.0, "popqa": 0.0, "avg": 2.5}},
                       "questions": {"nq": 20, "popqa": 20}, "refiner": {"sft": {"auc": 0.55, "exact": 0.5}}}
    merged["direct"]["nq"]["n"] = 10                  # systems scored on different questions: both counts kept
    assert summarize(merged)["questions"]["nq"] == [10, 20]


def test_direct_and_rag_answer_in_one_turn(tiny):
    model, tok = tiny
    cfg = RolloutConfig(max_new_tokens=8, do_sample=False)
    qs = ["who founded orvane bay", "when was mira tesk born"]
    direct = answer_direct(model, tok, qs, cfg)
    assert all(t.turns == 1 and t.finished and not t.searches for t in direct)
    retriever = FakeRetriever()
    rag = answer_rag(model, tok, retriever, qs, cfg)
    assert retriever.calls == [["who founded orvane bay?", "when was mira tesk born?"]]   # one batched call
    for t, q in zip(rag, qs):
        prompt = tok.decode(t.token_ids[:t.prompt_len])
        assert "Doc 1(Title: Page 0) Text about" in prompt and q in prompt
        assert t.turns == 1 and len(t.documents) == 1 and sum(t.loss_mask[:t.prompt_len]) == 0


@pytest.mark.parametrize("reply, expected", [
    ("Lake Geneva", "Lake Geneva"), ("  Lake Geneva.  \nIt is in Switzerland.", "Lake Geneva."),
    ("\n\n  1987\n", "1987"), ("", None), (" \n\t\n", None), ("<answer>Paris</answer>", "<answer>Paris</answer>"),
])
def test_the_plain_reply_s_first_line_is_the_prediction(reply, expected):
    assert reply_prediction(reply) == expected


@pytest.mark.parametrize("system", ["direct", "rag", "direct_tagged", "rag_tagged"])
def test_answer_only_baselines_predict_the_reply_and_tagged_ones_the_tags(tiny, system):
    from searchr2.protocol import extract_answer

    model, tok = tiny
    cfg = RolloutConfig(max_new_tokens=12, do_sample=False)
    qs = ["who founded orvane bay", "when was mira tesk born"]
    trajs = answer_baseline(system, model, tok, FakeRetriever(), qs, cfg)
    for t in trajs:
        prompt = tok.decode(t.token_ids[:t.prompt_len])
        assert ("<answer>" in prompt) == system.endswith("_tagged")
        assert ("Documents:" in prompt) == system.startswith("rag")
        reply = [i for i, m in zip(t.token_ids, t.loss_mask) if m]
        assert len(reply) == len(t.token_ids) - t.prompt_len and reply      # the whole turn is the reply
        if system.endswith("_tagged"):
            assert t.answer == extract_answer(t.generated_text(tok))
        else:
            assert t.answer == reply_prediction(tok.decode(reply, skip_special_tokens=True))


def test_refiner_heldout_file_is_validated_and_scored(tiny, tmp_path):
    from searchr2.evaluation import load_labelled_meta_prompts, score_refiner
    from searchr2.refiner import RefinerConfig, answer_token_ids

    model, tok = tiny
    prompt = tok("Which step is the first wrong one?", add_special_tokens=False)["input_ids"]
    digits = answer_token_ids(tok, 2)
    rows = [{"token_ids": prompt + [digits[y]], "label": y, "n_steps": 2} for y in (0, 1, 2, 0)]
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = score_refiner(model, tok, load_labelled_meta_prompts(path), RefinerConfig())
    assert acc["n"] == 4 and 0 <= acc["exact"] <= 1 and 0 <= acc["accept_reject"] <= 1
    # the same prompt for all four: the argmax is one answer, so exactly the rows with that label are right
    assert acc["exact"] in (0.25, 0.5)
    rows[2]["label"] = 5
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"heldout.jsonl:3: field 'label'"):
        load_labelled_meta_prompts(path)
