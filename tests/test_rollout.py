"""The batched multi-turn rollout engine (searchr2.rollout).

Most tests drive the REAL tiny model through Hugging Face ``generate`` but force its next token with
a logits processor (``Scripted``), so a test decides what each row writes in each turn while the
engine's batching, per-row stopping, padding and mask bookkeeping run for real.
"""
import json
import re
import threading
import time

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from searchr2.models import load_model, load_tokenizer
from searchr2.protocol import CORRECTION_MESSAGE, FINAL_TURN_MESSAGE, NO_DOCUMENTS, build_prompt_ids, observation_text
from searchr2.rollout import (RetrievalError, RolloutConfig, Trajectory, common_prefix_length, new_trajectory, rollout,
                              search_batch)
from conftest import make_tiny_model

DOCS = {
    "orvane bay founder": [{"id": "7", "title": "Orvane Bay", "text": "Orvane Bay was founded by Mira Tesk.", "score": 3.0},
                           {"id": "9", "title": "Mira Tesk", "text": "Mira Tesk, born 1901.", "score": 1.0}],
}


class FakeRetriever:
    """Fixed fictional passages; records every batch it was asked."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def search(self, queries, k):
        self.calls.append(list(queries))
        default = [{"id": "0", "title": "Lumsey Dal", "text": f"Nothing about {q}.", "score": 0.5} for q in queries]
        return [DOCS.get(q.lower(), [default[i]] * 5)[:k] for i, q in enumerate(queries)]


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model_dir = make_tiny_model(tmp_path_factory.mktemp("rollout"), seed=1)
    return load_model(model_dir), load_tokenizer(model_dir)


class _Force(LogitsProcessor):
    def __init__(self, plans, start, filler, keys, record):
        self.plans, self.start, self.filler, self.keys, self.record = plans, start, filler, keys, record

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, float("-inf"))
        for r, plan in enumerate(self.plans):
            self.record[self.keys[r] + (step,)] = scores[r].clone()   # the model's own scores
            if plan is None:              # this row runs free: the model's own scores
                forced[r] = scores[r]
            else:
                forced[r, plan[step] if step < len(plan) else self.filler] = 0.0
        return forced


class Scripted:
    """Wraps a real model; ``script(question, turn) -> str | list[int] | None`` says what a row writes
    (None: the model writes freely).

    ``turn`` is how many assistant turns the row's context already holds (counted from the tool
    text the engine appended), so the wrapper itself keeps no state. Tokens after the scripted
    ones are a filler token, so a row that never stops runs to its limit.
    """

    def __init__(self, model, tok, script):
        self.model, self.tok, self.script = model, tok, script
        self.filler = tok("x", add_special_tokens=False)["input_ids"][0]
        self.batches: list[int] = []
        self.scores: dict[tuple, torch.Tensor] = {}   # (question, turn, step) -> the model's raw scores

    def __getattr__(self, name):  # device, training, eval, train, generation_config ...
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):          # plain forward passes (the refiner's review) are not scripted
        return self.model(*args, **kwargs)

    def generate(self, input_ids, attention_mask, **kw):
        plans, keys = [], []
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            text = self.tok.decode([t for t, m in zip(row, mask) if m], skip_special_tokens=False)
            question = re.search(r"Question: (.*?\?)", text).group(1)
            turn = text.count("</information>\n") + text.count(CORRECTION_MESSAGE.strip().split(".")[0])
            plan = self.script(question, turn)
            keys.append((question, turn))
            plans.append(plan if plan is None or isinstance(plan, list)
                         else self.tok(plan, add_special_tokens=False)["input_ids"])
        self.batches.append(len(plans))
        kw["logits_processor"] = LogitsProcessorList([_Force(plans, input_ids.shape[1], self.filler, keys,
                                                             self.scores)])
        return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kw)


def check_invariants(t: Trajectory, tok):
    """Mask is 1 exactly on assistant spans; steps tile everything after the prompt."""
    assert len(t.token_ids) == len(t.loss_mask)
    assert t.loss_mask[:t.prompt_len] == [0] * t.prompt_len
    pos = t.prompt_len
    for step in t.steps:
        assert step["start"] == pos and step["end"] > step["start"]
        want = 1 if step["kind"] == "assistant" else 0
        assert t.loss_mask[step["start"]:step["end"]] == [want] * (step["end"] - step["start"])
        pos = step["end"]
    assert pos == len(t.token_ids)
    kinds = [s["kind"] for s in t.steps]
    assert all(a != b for a, b in zip(kinds, kinds[1:])) and (not kinds or kinds[0] == "assistant")
    assert sum(t.loss_mask) == sum(s["end"] - s["start"] for s in t.steps if s["kind"] == "assistant")


def span(t, tok, step):
    return tok.decode(t.token_ids[step["start"]:step["end"]], skip_special_tokens=False)


CFG = RolloutConfig(max_turns=2, max_new_tokens=24, max_obs_tokens=60, batch_size=4, do_sample=False)


def test_search_then_answer_builds_the_mask_token_by_token(tiny):
    model, tok = tiny
    def script(q, turn):
        return ("<think>look it up</think><search> Orvane Bay founder </search> more words after"
                if turn == 0 else "<answer> Mira Tesk </answer> trailing")
    retriever = FakeRetriever()
    [t] = rollout(Scripted(model, tok, script), tok, retriever, ["who founded Orvane Bay"], CFG)
    check_invariants(t, tok)
    assert (t.stop_reason, t.finished, t.answer, t.turns) == ("answer", True, "Mira Tesk", 2)
    assert t.searches == ["Orvane Bay founder"] and retriever.calls == [["Orvane Bay founder"]]
    assert t.documents == [DOCS["orvane bay founder"][:3]]
    assert t.token_ids[:t.prompt_len] == build_prompt_ids(tok, "who founded Orvane Bay")
    a1, obs, a2 = t.steps
    assert span(t, tok, a1) == "<think>look it up</think><search> Orvane Bay founder </search>"  # cut after the tag
    assert span(t, tok, obs) == observation_text(t.documents[0], tok, CFG.max_obs_tokens)        # exactly the observation
    assert "<information>Doc 1(Title: Orvane Bay) Orvane Bay was founded by Mira Tesk." in span(t, tok, obs)
    assert span(t, tok, a2) == "<answer> Mira Tesk </answer>"
    assert (a1["action"], obs["search"], a2["action"]) == ("search", 0, "answer")
    assert t.generated_text(tok) == span(t, tok, a1) + span(t, tok, a2)
    assert t.response_text(tok) == span(t, tok, a1) + span(t, tok, obs) + span(t, tok, a2)


def test_without_search_the_prompt_offers_none_and_the_one_turn_answers(tiny):
    """rollout.max_turns 0 (the R1-base rung): the no-search prompt, one turn that stops only at the
    answer, a search tag in it is plain text, and the retriever is never called."""
    model, tok = tiny
    retriever = FakeRetriever()
    written = "<think>I recall it</think><search>orvane bay founder</search><answer> Mira Tesk </answer> after"
    cfg = RolloutConfig(max_turns=0, max_new_tokens=40, max_obs_tokens=60, batch_size=4, do_sample=False)
    [t] = rollout(Scripted(model, tok, lambda q, turn: written), tok, retriever, ["who founded Orvane Bay"], cfg)
    check_invariants(t, tok)
    assert t.token_ids[:t.prompt_len] == build_prompt_ids(tok, "who founded Orvane Bay", search=False)
    assert (t.stop_reason, t.answer, t.turns, t.searches, t.documents) == ("answer", "Mira Tesk", 1, [], [])
    assert retriever.calls == [] and len(t.steps) == 1
    assert span(t, tok, t.steps[0]).endswith("</search><answer> Mira Tesk </answer>")


def test_mixed_batch_stops_each_row_on_its_own_and_batches_retrieval(tiny):
    model, tok = tiny
    eos = tok.eos_token
    behaviour = {
        "A search then answer?": lambda turn: "<search>orvane bay founder</search>" if turn == 0 else "<answer>Mira Tesk</answer>",
        "B answers at once?": lambda turn: "<think>easy</think><answer>1901</answer>",
        "C only whitespace?": lambda turn: "   \n " + eos,
        "D never closes a tag?": lambda turn: "<search> Orvane",
        "E loops on one search?": lambda turn: "<search>same query</search>",
        "F empty search?": lambda turn: "<search>   </search>",
        "G closes without opening?": lambda turn: "Mira</answer>",
    }
    retriever = FakeRetriever()
    wrapped = Scripted(model, tok, lambda q, turn: behaviour[q](turn))
    cfg = RolloutConfig(max_turns=3, max_new_tokens=16, max_obs_tokens=40, batch_size=3, do_sample=False)
    out = rollout(wrapped, tok, retriever, list(behaviour), cfg)
    by_q = {t.question: t for t in out}
    for t in out:
        check_invariants(t, tok)
    assert [t.question for t in out] == list(behaviour)            # order kept
    a, b, c, d, e, f, g = out
    assert (a.stop_reason, a.answer, a.turns, a.searches) == ("answer", "Mira Tesk", 2, ["orvane bay founder"])
    assert (b.stop_reason, b.answer, b.turns, b.searches) == ("answer", "1901", 1, [])
    for t in (c, d, f, g):   # invalid every turn: correction each time, then the final answer-only turn
        assert (t.stop_reason, t.answer, t.turns, t.searches) == ("turn_budget", None, 4, [])
        assert [s["action"] for s in t.steps if s["kind"] == "assistant"] == ["invalid"] * 4
        tools = [span(t, tok, s) for s in t.steps if s["kind"] == "tool"]
        assert tools == [CORRECTION_MESSAGE] * 2 + [CORRECTION_MESSAGE + FINAL_TURN_MESSAGE]
    assert span(c, tok, c.steps[0]) == "   \n " + eos                # EOS kept: it was generated
    assert d.steps[0]["end"] - d.steps[0]["start"] == cfg.max_new_tokens   # ran to its limit
    # E searches in each of its 3 turns, then its 4th (final) search is not executed
    assert (e.stop_reason, e.turns, e.searches) == ("turn_budget", 4, ["same query"] * 3)
    assert e.steps[-1]["action"] == "invalid" and span(e, tok, e.steps[-1]).startswith("<search>same query</search>")
    assert span(e, tok, e.steps[-2]).endswith("</information>\n" + FINAL_TURN_MESSAGE)
    # one retriever call per round, holding the queries of every row that searched in that round
    assert retriever.calls == [["orvane bay founder", "same query"], ["same query"], ["same query"]]
    # each round's live rows were generated in chunks of at most batch_size: 7 live, then 6
    # (B answered), then 5 (A answered), then the same 5 in the final turn
    assert max(wrapped.batches) == 3 and sum(wrapped.batches) == 7 + 6 + 5 + 5
    assert by_q["E loops on one search?"] is e


def test_multi_token_tags_are_detected_by_text(tiny):
    """Tags spelled byte by byte (as SmolLM2-like tokenizers split them) still stop the turn."""
    model, tok = tiny
    def spell(text):
        return [tok.convert_tokens_to_ids(ch) for ch in text]     # single-byte tokens of the byte-level BPE
    single = tok("</search>", add_special_tokens=False)["input_ids"]
    assert len(single) == 1 and len(spell("</search>")) == 9 and single[0] not in spell("</search>")
    def script(q, turn):
        if turn == 0:
            return tok("<search>", add_special_tokens=False)["input_ids"] + spell("bay") + spell("</search>") + spell("zzz")
        return tok("<answer>", add_special_tokens=False)["input_ids"] + spell("ok") + spell("</answer>") + spell("zzz")
    retriever = FakeRetriever()
    [t] = rollout(Scripted(model, tok, script), tok, retriever, ["q"], CFG)
    check_invariants(t, tok)
    assert (t.stop_reason, t.answer, t.searches) == ("answer", "ok", ["bay"])
    assert span(t, tok, t.steps[0]) == "<search>bay</search>" and span(t, tok, t.steps[2]) == "<answer>ok</answer>"


def test_final_turn_ignores_search_and_stops_only_at_answer(tiny):
    model, tok = tiny
    script = lambda q, turn: ("<search>a</search>" if turn == 0 else "<search>b</search> so <answer>c</answer> x")
    retriever = FakeRetriever()
    [t] = rollout(Scripted(model, tok, script), tok, retriever, ["q"],
                  RolloutConfig(max_turns=1, max_new_tokens=24, do_sample=False))
    check_invariants(t, tok)
    assert (t.stop_reason, t.answer, t.turns, t.searches) == ("answer", "c", 2, ["a"])
    assert span(t, tok, t.steps[-1]) == "<search>b</search> so <answer>c</answer>"
    assert retriever.calls == [["a"]]


def test_context_cap_stops_without_exceeding_it(tiny):
    model, tok = tiny
    script = lambda q, turn: "<search>orvane bay founder</search>"
    prompt_len = len(build_prompt_ids(tok, "q"))
    for room in (0, 5, 30):
        cfg = RolloutConfig(max_turns=4, max_new_tokens=24, max_obs_tokens=60, max_context_tokens=prompt_len + room,
                            do_sample=False)
        [t] = rollout(Scripted(model, tok, script), tok, FakeRetriever(), ["q"], cfg)
        check_invariants(t, tok)
        assert t.stop_reason == "context_cap" and t.finished and t.answer is None
        assert len(t.token_ids) <= cfg.max_context_tokens
        assert len(t.searches) == sum(1 for s in t.steps if s["kind"] == "tool")   # only shown observations count


def test_empty_retrieval_gives_the_no_documents_observation(tiny):
    model, tok = tiny
    class Empty:
        def search(self, queries, k):
            return [[] for _ in queries]
    script = lambda q, turn: "<search>nothing</search>" if turn == 0 else "<answer>none</answer>"
    [t] = rollout(Scripted(model, tok, script), tok, Empty(), ["q"], CFG)
    assert span(t, tok, t.steps[1]) == f"\n<information>{NO_DOCUMENTS}</information>\n"
    assert t.documents == [[]] and t.stop_reason == "answer"


def test_continuing_from_a_prefix_keeps_its_ids_and_mask(tiny):
    model, tok = tiny
    script = lambda q, turn: ["<search>first</search>", "<search>second</search>", "<answer>done</answer>"][turn]
    cfg = RolloutConfig(max_turns=3, max_new_tokens=24, max_obs_tokens=40, do_sample=False)
    [full] = rollout(Scripted(model, tok, script), tok, FakeRetriever(), ["q"], cfg)
    assert full.searches == ["first", "second"] and full.turns == 3
    prefix = full.truncate(1)
    assert (prefix.turns, prefix.searches, prefix.finished, prefix.answer) == (1, ["first"], False, None)
    assert prefix.steps[-1]["kind"] == "tool" and len(prefix.token_ids) == prefix.steps[-1]["end"]
    kept_ids, kept_mask = list(prefix.token_ids), list(prefix.loss_mask)
    other = lambda q, turn: "<answer>changed my mind</answer>"
    retriever = FakeRetriever()
    [again] = rollout(Scripted(model, tok, other), tok, retriever, ["q"], cfg, prefixes=[prefix])
    check_invariants(again, tok)
    assert again.token_ids[:len(kept_ids)] == kept_ids and again.loss_mask[:len(kept_mask)] == kept_mask
    assert prefix.token_ids == kept_ids and not prefix.finished                 # the caller's prefix is untouched
    assert (again.answer, again.turns, again.searches, retriever.calls) == ("changed my mind", 2, ["first"], [])
    assert again.steps[:len(prefix.steps)] == prefix.steps
    # the prefix's turns count against the budget: with max_turns=1 only the final turn is left
    loop = lambda q, turn: "<search>more</search>"
    [capped] = rollout(Scripted(model, tok, loop), tok, FakeRetriever(),
                       ["q"], RolloutConfig(max_turns=2, max_new_tokens=24, max_obs_tokens=40, do_sample=False),
                       prefixes=[prefix])
    assert (capped.turns, capped.searches, capped.stop_reason) == (3, ["first", "more"], "turn_budget")
    # truncate(0) is the bare prompt
    bare = full.truncate(0)
    assert bare.token_ids == full.token_ids[:full.prompt_len] and bare.steps == []


def test_greedy_continuation_of_a_free_running_prefix_reproduces_the_trajectory(tiny):
    model, tok = tiny
    cfg = RolloutConfig(max_turns=2, max_new_tokens=12, max_obs_tokens=40, do_sample=False)
    [full] = rollout(model, tok, FakeRetriever(), ["Where was Varen Koltho born"], cfg)
    check_invariants(full, tok)
    assert full.turns == 3 and full.finished
    [again] = rollout(model, tok, FakeRetriever(), ["Where was Varen Koltho born"], cfg, prefixes=[full.truncate(2)])
    assert again.token_ids == full.token_ids and again.loss_mask == full.loss_mask and again.steps == full.steps


#: what each row of a mixed batch writes, by turn (None: the model writes freely): rows that search, answer
#: early, stop at once and run free, so caches get holes, lose rows and take tool outputs of every length
MIXED_PLANS = {
    "free A?": lambda turn: None,
    "answers early?": lambda turn: "<search>orvane bay founder</search>" if turn == 0 else "<answer>x</answer>",
    "free B?": lambda turn: None,
    "short then free?": lambda turn: "<search>q</search>" if turn < 2 else None,
    "stops at once?": lambda turn: "<answer>y</answer>",
}


def assert_same_rollouts(runs: dict, scores: dict, tok) -> None:
    """Two runs (keys True and False) agree: every trajectory token for token, and the raw scores of every
    generated position within 1e-4 (the tiny model mostly repeats its last token, so equal ids alone prove
    little; the scores see the whole context)."""
    for a, b in zip(runs[True], runs[False]):
        check_invariants(a, tok)
        assert a.to_dict() == b.to_dict(), a.question
    assert scores[True].keys() == scores[False].keys() and len(scores[True]) > 100
    for key, value in scores[True].items():
        assert torch.allclose(value, scores[False][key], atol=1e-4), key


def test_kv_cache_reuse_across_turns_matches_fresh_prefill(tiny):
    """Reusing each batch's KV cache (holes, removed rows, varied tool lengths) changes no token."""
    model, tok = tiny
    plans = MIXED_PLANS
    runs, scores = {}, {}
    for reuse in (True, False):   # greedy: sampling draws depend on row order, which regrouping changes
        wrapped = Scripted(model, tok, lambda q, turn: plans[q](turn))
        cfg = RolloutConfig(max_turns=3, max_new_tokens=12, max_obs_tokens=30, batch_size=4, reuse_cache=reuse,
                            do_sample=False)
        runs[reuse] = rollout(wrapped, tok, FakeRetriever(), list(plans), cfg)
        scores[reuse] = wrapped.scores
    assert_same_rollouts(runs, scores, tok)
    cached = runs[True]
    assert [t.stop_reason for t in cached] == ["turn_budget", "answer", "turn_budget", "turn_budget", "answer"]
    assert cached[1].searches == ["orvane bay founder"] and cached[3].searches == ["q", "q"]
    assert cached[0].turns == 4 and cached[0].token_ids != cached[2].token_ids


def test_common_prefix_length_leaves_every_row_a_token():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2          # each row keeps its last id to feed
    assert common_prefix_length([[1, 2], [3, 2]]) == 0
    assert common_prefix_length([[5, 6, 7]]) == 2 and common_prefix_length([]) == 0


def test_shared_prefix_is_fed_once_and_changes_nothing(tiny):
    """The rows' shared start (the instructions) is fed once and copied: same tokens, same scores, fewer
    tokens through the model."""
    model, tok = tiny
    plans = MIXED_PLANS
    runs, scores, fed = {}, {}, {}
    for share in (True, False):
        wrapped = Scripted(model, tok, lambda q, turn: plans[q](turn))
        seen: list[int] = []
        hook = model.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["input_ids"].numel()),
                                               with_kwargs=True)
        try:
            cfg = RolloutConfig(max_turns=3, max_new_tokens=12, max_obs_tokens=30, batch_size=4, do_sample=False,
                                share_prefix=share)
            runs[share] = rollout(wrapped, tok, FakeRetriever(), list(plans), cfg)
        finally:
            hook.remove()
        scores[share], fed[share] = wrapped.scores, sum(seen)
    assert_same_rollouts(runs, scores, tok)
    shared = common_prefix_length([new_trajectory(tok, q).token_ids for q in plans])
    assert shared > 20                                         # the instructions
    assert fed[True] <= fed[False] - 3 * shared                # a batch of 4 fed them once, not four times


def test_bad_prefixes_are_rejected(tiny):
    model, tok = tiny
    script = lambda q, turn: "<answer>x</answer>"
    [done] = rollout(Scripted(model, tok, script), tok, FakeRetriever(), ["q"], CFG)
    with pytest.raises(ValueError, match="finished"):
        rollout(model, tok, FakeRetriever(), ["q"], CFG, prefixes=[done])
    with pytest.raises(ValueError, match="question"):
        rollout(model, tok, FakeRetriever(), ["other"], CFG, prefixes=[done.truncate(0)])
    with pytest.raises(ValueError, match="ends in an assistant turn"):
        rollout(model, tok, FakeRetriever(), ["q"], CFG, prefixes=[done.truncate(1)])
    with pytest.raises(ValueError, match="prefixes for"):
        rollout(model, tok, FakeRetriever(), ["q", "r"], CFG, prefixes=[None])
    with pytest.raises(ValueError, match="n_turns"):
        done.truncate(5)


@pytest.mark.parametrize("sample", [False, True])
def test_same_seed_same_trajectories(tiny, sample):
    model, tok = tiny
    qs = ["Where was Varen Koltho born", "Who founded Kethra University", "When was Lumsey Dal built"]
    cfg = RolloutConfig(max_turns=1, max_new_tokens=10, do_sample=sample, temperature=1.3, batch_size=2, seed=5)
    torch.manual_seed(123)
    one = rollout(model, tok, FakeRetriever(), qs, cfg)
    state = torch.random.get_rng_state()
    two = rollout(model, tok, FakeRetriever(), qs, cfg)
    assert torch.equal(state, torch.random.get_rng_state())      # the caller's RNG is left alone
    assert [t.to_dict() for t in one] == [t.to_dict() for t in two]
    other = rollout(model, tok, FakeRetriever(), qs, RolloutConfig(**{**cfg.__dict__, "seed": 6}))
    if sample:
        assert [t.token_ids for t in other] != [t.token_ids for t in one]
    else:
        assert [t.token_ids for t in other] == [t.token_ids for t in one]
    assert Trajectory.from_dict(json.loads(json.dumps(one[0].to_dict()))) == one[0]


def test_model_mode_is_restored(tiny):
    model, tok = tiny
    model.train()
    rollout(model, tok, FakeRetriever(), ["q"], RolloutConfig(max_turns=0, max_new_tokens=2, do_sample=False))
    assert model.training
    model.eval()


# ------------------------------------------------------------------------------ retriever failures

FAST = RolloutConfig(retries=2, retry_backoff_s=0.01, search_timeout_s=2.0)


def test_failing_retriever_is_retried_then_raises_a_clear_error():
    class Broken:
        calls = 0

        def search(self, queries, k):
            Broken.calls += 1
            raise ConnectionError(f"index offline #{Broken.calls}")
    t0 = time.perf_counter()
    with pytest.raises(RetrievalError, match=r"batch of 3 queries after 3 attempt\(s\).*ConnectionError: index offline #3"):
        search_batch(Broken(), ["a", "b", "c"], 3, RolloutConfig(retries=2, retry_backoff_s=0.05))
    assert Broken.calls == 3
    assert time.perf_counter() - t0 >= 0.05 + 0.1          # backoff doubles: 0.05 s, then 0.1 s


def test_flaky_retriever_recovers_and_results_are_cut_to_k():
    class Flaky(FakeRetriever):
        failures = 1

        def search(self, queries, k):
            if Flaky.failures:
                Flaky.failures -= 1
                raise RuntimeError("transient")
            return [[{"id": str(i), "title": "t", "text": "x", "score": 0.0} for i in range(10)] for _ in queries]
    out = search_batch(Flaky(), ["a", "b"], 3, FAST)
    assert [len(d) for d in out] == [3, 3]


def test_hanging_retriever_is_abandoned_and_the_worker_replaced():
    release = threading.Event()
    threads = []

    class Hangs:
        def search(self, queries, k):
            threads.append(threading.current_thread())
            release.wait(30)
            return [[] for _ in queries]
    cfg = RolloutConfig(retries=1, retry_backoff_s=0.0, search_timeout_s=0.3)
    t0 = time.perf_counter()
    with pytest.raises(RetrievalError, match="batch of 1 queries after 2 attempt.*TimeoutError: no reply within 0.3 s"):
        search_batch(Hangs(), ["a"], 3, cfg)
    assert time.perf_counter() - t0 < 3
    release.set()
    assert threads[0] is not threading.main_thread() and threads[0].daemon
    # afterwards a healthy retriever works again, on one persistent worker thread
    seen = []

    class Records(FakeRetriever):
        def search(self, queries, k):
            seen.append(threading.current_thread())
            return super().search(queries, k)
    search_batch(Records(), ["a"], 3, cfg)
    search_batch(Records(), ["b"], 3, cfg)
    assert seen[0] is seen[1] and seen[0] not in threads


def test_malformed_results_raise():
    class Short:
        def search(self, queries, k):
            return [[]]
    with pytest.raises(RetrievalError, match="for 2 queries"):
        search_batch(Short(), ["a", "b"], 3, FAST)


def test_rollout_surfaces_retrieval_errors(tiny):
    model, tok = tiny
    class Broken:
        def search(self, queries, k):
            raise ValueError("boom")
    script = lambda q, turn: "<search>x</search>"
    cfg = RolloutConfig(max_turns=2, max_new_tokens=12, retries=0, do_sample=False)
    with pytest.raises(RetrievalError, match="batch of 2 queries.*boom"):
        rollout(Scripted(model, tok, script), tok, Broken(), ["q1", "q2"], cfg)


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_new_tokens"):
        RolloutConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        RolloutConfig(top_p=0)
    with pytest.raises(ValueError, match="search_timeout_s"):
        RolloutConfig(search_timeout_s=0)
    with pytest.raises(ValueError, match="batch_size must be an int"):
        RolloutConfig(batch_size=2.5)
    with pytest.raises(TypeError):
        rollout(None, None, None, "one question", RolloutConfig())


# ------------------------------------------------------------------- SmolLM2 (tags split in tokens)

@pytest.mark.slow
def test_smollm2_split_tags_stop_the_turn_and_keep_the_mask(smollm2_dir):
    d = smollm2_dir
    model, tok = load_model(d), load_tokenizer(d)
    assert len(tok("</search>", add_special_tokens=False)["input_ids"]) > 1
    first = "<think>I need the founder.</think>\n<search> Orvane Bay founder </search>\n\nThen more text"
    script = lambda q, turn: first if turn == 0 else "<answer>Mira Tesk</answer> and so on"
    retriever = FakeRetriever()
    out = rollout(Scripted(model, tok, script), tok, retriever, ["who founded Orvane Bay", "who built Kethra"],
                  RolloutConfig(max_turns=2, max_new_tokens=40, max_obs_tokens=80, do_sample=False))
    for t in out:
        check_invariants(t, tok)
        assert (t.stop_reason, t.answer, t.searches) == ("answer", "Mira Tesk", ["Orvane Bay founder"])
        assert span(t, tok, t.steps[0]) == first.split("</search>")[0] + "</search>"
        assert span(t, tok, t.steps[1]) == observation_text(t.documents[0], tok, 80)
    assert retriever.calls == [["Orvane Bay founder"] * 2]
    # free running, greedy: whatever the model writes, the bookkeeping holds and the loop ends
    free = rollout(model, tok, FakeRetriever(), ["Where was Varen Koltho born", "Who founded Orvane Bay"],
                   RolloutConfig(max_turns=1, max_new_tokens=24, do_sample=False))
    for t in free:
        check_invariants(t, tok)
        assert t.finished and t.stop_reason in ("answer", "turn_budget", "context_cap")


@pytest.mark.slow
def test_smollm2_scores_are_the_same_with_the_speed_features_off(smollm2_dir, monkeypatch):
    """On the real model (GQA, 30 layers): the growing cache and the shared prefix change no score beyond
    float rounding, on scripted multi-turn rollouts whose contexts grow past a buffer's first size."""
    import transformers

    import searchr2.rollout as rollout_mod

    model, tok = load_model(smollm2_dir), load_tokenizer(smollm2_dir)
    plans = {
        "Who founded Orvane Bay?": ["<search>orvane bay founder</search>", "<answer>Mira Tesk</answer>"],
        "Where was Varen Koltho born?": ["<search>Varen Koltho</search>", "<search>Koltho birthplace</search>",
                                        "<answer>Lumsey Dal</answer>"],
        "Which river runs past Kethra?": ["<answer>the Osk</answer>"],
    }
    scores = {}
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(rollout_mod, "growing_cache", lambda config: transformers.DynamicCache(config=config))
        wrapped = Scripted(model, tok, lambda q, turn: plans[q][min(turn, len(plans[q]) - 1)])
        cfg = RolloutConfig(max_turns=2, max_new_tokens=16, max_obs_tokens=60, batch_size=3, do_sample=False,
                            share_prefix=fast)
        out = rollout(wrapped, tok, FakeRetriever(), list(plans), cfg)
        assert [t.stop_reason for t in out] == ["answer", "answer", "answer"]
        scores[fast] = wrapped.scores
    assert scores[True].keys() == scores[False].keys() and len(scores[True]) > 60
    for key, value in scores[True].items():
        assert torch.allclose(value, scores[False][key], atol=2e-3, rtol=1e-4), key
