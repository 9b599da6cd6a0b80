"""Judges of the process reward (searchr2.judge): the rule judge, the LLM judge's prompt and parsing,
and one real batched call on a tiny random model."""
from types import SimpleNamespace

import pytest

from searchr2.judge import (MAX_ALIASES_SHOWN, JudgeResult, LLMJudge, RuleJudge, judge_prompt_text, make_judge,
                            mentions_answer, parse_count)
from searchr2.models import TINY_CHAT_TEMPLATE, load_model, load_tokenizer
from searchr2.rollout import Trajectory
from conftest import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread


def doc(pid, title="Filler", text="Nothing relevant here."):
    return {"id": str(pid), "title": title, "text": text, "score": 1.0}


def traj(collections, question="Who founded Orvane Bay?", answer=None):
    return Trajectory(question=question, token_ids=[], loss_mask=[], prompt_len=0,
                      searches=[f"q{i}" for i in range(len(collections))], documents=[list(c) for c in collections],
                      answer=answer)


def record(golds=("Mira Tesk",), support=None, question="Who founded Orvane Bay?"):
    rec = {"id": "r", "question": question, "golden_answers": list(golds), "metadata": {}}
    if support is not None:
        rec["metadata"]["supporting_passage_ids"] = list(support)
    return rec


# ------------------------------------------------------------------------------------------- rule

def test_alias_matches_whole_words_only():
    aliases = [["paris"]]
    assert mentions_answer(doc(1, text="She moved to Paris in 1920."), aliases)
    assert not mentions_answer(doc(1, text="A Parisian cafe, opened in 1920."), aliases)
    assert mentions_answer(doc(1, title="Paris", text="Capital."), aliases)          # the title counts too
    # a multi-word alias must appear as a contiguous run of words, after normalisation
    assert mentions_answer(doc(1, text="founded by MIRA   Tesk."), [["mira", "tesk"]])
    assert not mentions_answer(doc(1, text="Mira met Tesk."), [["mira", "tesk"]])


def test_rule_flags_gold_alias_vs_substring():
    j = RuleJudge()
    t = traj([[doc(1, text="Orvane Bay was founded by Mira Tesk.")],
              [doc(2, text="The Mira Teskova archive holds letters.")]])
    assert j.flags(record(), t) == [1, 0]


def test_rule_supporting_id_counts_without_alias():
    j = RuleJudge()
    t = traj([[doc(7, text="A harbour town on the north coast.")], [doc(8)]])
    assert j.flags(record(support=["7"]), t) == [1, 0]
    assert j.flags(record(support=[]), t) == [0, 0]           # no metadata ids: only the alias rule
    assert j.flags(record(support=[7]), t) == [1, 0]          # ids compared as strings


def test_rule_repeated_collection_is_not_useful():
    j = RuleJudge()
    good = [doc(1, text="Founded by Mira Tesk."), doc(2)]
    t = traj([good, list(good), list(reversed(good))])
    assert j.flags(record(), t) == [1, 0, 0]
    res = j.judge([record()], [t])[0]
    assert (res.useful, res.searches) == (1, 3) and res.process == pytest.approx(1 / 3)


def test_rule_needs_a_new_passage_and_evidence():
    j = RuleJudge()
    evidence = doc(1, text="Founded by Mira Tesk.")
    t = traj([[doc(5)],                       # new but no evidence
              [evidence, doc(5)],             # evidence, and passage 1 is new
              [evidence, doc(6)],             # evidence again, plus a new (irrelevant) passage 6
              [doc(6), evidence],             # nothing new
              []])                            # empty collection
    assert j.flags(record(), t) == [0, 1, 1, 0, 0]
    # an irrelevant collection does not make the evidence in a later one "seen"
    assert j.flags(record(), traj([[doc(5)], [evidence]])) == [0, 1]
    # passages of a collection without evidence are "seen" all the same
    assert j.flags(record(), traj([[doc(5)], [evidence], [evidence, doc(5)]])) == [0, 1, 0]


def test_rule_no_search_scores_zero():
    j = RuleJudge()
    res = j.judge([record()], [traj([])])[0]
    assert (res.useful, res.searches, res.flags, res.process) == (0, 0, [], 0.0)
    assert j.process_scores([record()], [traj([])]) == [0.0]


def test_rule_yes_no_answers_are_not_evidence():
    j = RuleJudge()
    t = traj([[doc(1, text="No one knows who founded it.")], [doc(3143, text="A reggae band.")]])
    assert j.flags(record(golds=["no"]), t) == [0, 0]
    assert j.flags(record(golds=["no"], support=["3143"]), t) == [0, 1]


def test_rule_judge_batch_and_alignment():
    j = RuleJudge()
    recs = [record(), record(golds=["Kethra"])]
    ts = [traj([[doc(1, text="Mira Tesk did it.")], [doc(2)]]), traj([[doc(3, text="Kethra University.")]])]
    assert j.process_scores(recs, ts) == [0.5, 1.0]
    with pytest.raises(ValueError, match="align"):
        j.judge(recs, ts[:1])


# ------------------------------------------------------------------------------------ llm parsing

@pytest.mark.parametrize("reply, m, expected", [
    ("I count 2 useful.", 3, 2),
    ("5", 3, 3),                                              # clipped to M
    ("-1", 3, 0),                                             # clipped to 0
    ("Searches 1 and 3 helped, so the answer is 2", 3, 2),    # the LAST integer wins
    ("none", 3, None),                                        # no integer: unparsable
    ("", 2, None),
    ("<think>Search 1 is about the bay, 3 repeats it.</think>\nAnswer: 1", 3, 1),
    ("<think>search 1 looks useful, search 2", 3, None),      # cut off mid-thought
    ("0", 0, 0),
])
def test_parse_count(reply, m, expected):
    assert parse_count(reply, m) == expected


def test_parse_count_inside_open_think_block():
    # the chat template opened <think>: a reply that never closes it was cut off
    assert parse_count("search 1 is useful so 1", 2, thinking=True) is None
    assert parse_count("search 1 is useful</think>So: 1", 2, thinking=True) == 1
    assert parse_count(None, 2) is None
    with pytest.raises(ValueError):
        parse_count("1", -1)


class FakeTok:
    """Whitespace "tokenizer": enough for prompt text building (truncate_to_tokens)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split(" ")}

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        return " ".join(ids)


def test_judge_prompt_shows_question_gold_and_numbered_collections():
    golds = ["Mira Tesk"] + [f"alias {i}" for i in range(10)]
    cols = [[doc(1, "Orvane Bay", "founded by Mira Tesk " + "word " * 50)], [doc(2, "Mira Tesk", "born 1901")]]
    text = judge_prompt_text("who founded orvane bay", golds, cols, FakeTok(), doc_tokens=12)
    assert "Question: who founded orvane bay?" in text
    assert "Correct answer: Mira Tesk (also accepted: alias 0;" in text
    assert f"alias {MAX_ALIASES_SHOWN - 2}" in text and f"alias {MAX_ALIASES_SHOWN - 1}" not in text
    one, two = text.index("Search 1 returned:"), text.index("Search 2 returned:")
    assert one < two and "Doc 1(Title: Mira Tesk) born 1901" in text[two:]
    assert "word " * 20 not in text                         # each collection is cut to its token budget
    assert "from 0 to 2" in text


class ScriptedJudge(LLMJudge):
    """An LLM judge whose generation is a fixed list of replies (records the prompts it got)."""

    def __init__(self, tokenizer, replies):
        super().__init__(model=None, tokenizer=tokenizer, max_new_tokens=8, batch_size=2, doc_tokens=40)
        self.replies, self.prompts = list(replies), []

    def generate(self, prompts):
        self.prompts.extend(prompts)
        out, self.replies = self.replies[:len(prompts)], self.replies[len(prompts):]
        return out


# ---------------------------------------------------------------------------------- tiny model

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("judge"), seed=3)


@pytest.fixture(scope="module")
def tiny_tok(tiny_dir):
    return load_tokenizer(tiny_dir)


def test_llm_judge_scripted_replies(tiny_tok):
    j = ScriptedJudge(tiny_tok, ["I count 2 useful.", "5", "none"])
    recs = [record(), record(), record(), record()]
    ts = [traj([[doc(1)], [doc(2)], [doc(3)]]), traj([[doc(1)], [doc(2)], [doc(3)]]), traj([]), traj([[doc(4)]])]
    res = j.judge(recs, ts)
    assert [(r.useful, r.searches, r.parsed) for r in res] == [(2, 3, True), (3, 3, True), (0, 0, True), (0, 1, False)]
    assert len(j.prompts) == 3                                  # the no-search trajectory is not sent
    assert [r.process for r in res] == [pytest.approx(2 / 3), 1.0, 0.0, 0.0]
    assert res[3].reply == "none" and res[0].flags is None
    assert j.stats() == {"calls": 3, "unparsable": 1}
    # the prompt is the chat-templated judge message
    assert "Correct answer: Mira Tesk" in tiny_tok.decode(j.prompts[0])


def test_llm_judge_reads_past_a_think_block_the_template_opens(tiny_dir):
    tok = load_tokenizer(tiny_dir)                         # a fresh copy: the template is changed below
    tok.chat_template = TINY_CHAT_TEMPLATE.replace("assistant\n", "assistant\n<think>\n")
    ts = [traj([[doc(1)], [doc(2)]])] * 3
    j = ScriptedJudge(tok, ["search 1 helps, 2", "search 1 helps</think>\nSo: 1", "2"])
    res = j.judge([record()] * 3, ts)
    assert [(r.useful, r.parsed) for r in res] == [(0, False), (1, True), (0, False)]
    plain = ScriptedJudge(load_tokenizer(tiny_dir), ["2"]).judge([record()], ts[:1])
    assert (plain[0].useful, plain[0].parsed) == (2, True)


def test_llm_judge_real_tiny_model_batched(tiny_dir, tiny_tok):
    model = load_model(tiny_dir)
    recs = [record(), record(golds=["Kethra University", "Kethra"]), record(), record()]
    ts = [traj([[doc(1, "Orvane Bay", "Orvane Bay was founded by Mira Tesk.")], [doc(2)]]),
          traj([[doc(3, "Kethra University", "Founded in 1950.")]]),
          traj([]),
          traj([[doc(i, "Lumsey Dal", "Lumsey Dal lies near Orvane Bay. " * 8) for i in range(3)]] * 3)]
    j = LLMJudge(model, tiny_tok, max_new_tokens=4, batch_size=2, doc_tokens=24)
    res = j.judge(recs, ts)
    assert [r.searches for r in res] == [2, 1, 0, 3]
    for r in res:
        assert 0 <= r.useful <= r.searches and 0.0 <= r.process <= 1.0
        assert isinstance(r.reply, str) or r.searches == 0
    assert j.stats()["calls"] == 3 and 0 <= j.stats()["unparsable"] <= 3
    assert j.unparsable == sum(not r.parsed for r in res)
    # left padding is right: one prompt at a time gives the same greedy replies as batches of two
    solo = LLMJudge(model, tiny_tok, max_new_tokens=4, batch_size=1, doc_tokens=24).judge(recs, ts)
    assert [r.reply for r in solo] == [r.reply for r in res]
    scores = j.process_scores(recs, ts)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)


def test_llm_judge_rejects_bad_knobs(tiny_tok):
    with pytest.raises(ValueError, match="batch_size"):
        LLMJudge(None, tiny_tok, batch_size=0)
    with pytest.raises(ValueError, match="doc_tokens"):
        LLMJudge(None, tiny_tok, doc_tokens=True)


# -------------------------------------------------------------------------------------- factory

def _cfg(**kw):
    base = dict(judge="rule", judge_model="", judge_max_new_tokens=4, judge_batch_size=2, judge_doc_tokens=16,
                judge_device="cpu", judge_dtype="float32")
    return SimpleNamespace(**{**base, **kw})


def test_make_judge(tiny_dir, tmp_path):
    assert isinstance(make_judge(_cfg()), RuleJudge)
    with pytest.raises(ValueError, match="judge_model"):
        make_judge(_cfg(judge="llm"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        make_judge(_cfg(judge="llm", judge_model=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="rule, llm"):
        make_judge(_cfg(judge="gpt"))
    j = make_judge(_cfg(judge="llm", judge_model=str(tiny_dir)))
    assert isinstance(j, LLMJudge) and (j.max_new_tokens, j.batch_size, j.doc_tokens) == (4, 2, 16)
    assert j.tokenizer.padding_side == "left" and not j.model.training


def test_judge_result_process():
    assert JudgeResult(useful=0, searches=0).process == 0.0
    assert JudgeResult(useful=3, searches=4).process == 0.75
