"""The Meta-Refiner's prompt, answer scoring and decision rule (searchr2.refiner)."""
import pytest
import torch

from searchr2.refiner import (RefinerConfig, accuracy, answer_token_ids, cut_distribution, decision_distributions,
                              meta_prompt_ids, meta_prompt_text, revise_decision, trajectory_steps)
from searchr2.rollout import RolloutConfig
from searchr2.teacher import oracle_trajectory, plan_for
from tests.test_rollout import tiny  # noqa: F401 (a fixture)
from tests.test_teacher import BRIDGE, WordRetriever

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread
CFG = RolloutConfig(max_turns=4, max_new_tokens=200, max_obs_tokens=200, top_k=2, do_sample=False)


@pytest.fixture(scope="module")
def traj(tiny):
    _, tok = tiny
    return oracle_trajectory(plan_for(BRIDGE), BRIDGE["question"], tok, WordRetriever(), CFG)


def test_steps_are_the_assistant_turns_with_their_tool_output(tiny, traj):
    _, tok = tiny
    steps = trajectory_steps(traj, tok)
    assert len(steps) == traj.turns == 3
    assert steps[0][0].endswith("<search>Ana Varo spouse</search>") and "<information>" in steps[0][1]
    assert steps[2][0].endswith("<answer>Mira Tesk</answer>") and steps[2][1] == ""
    text = meta_prompt_text(traj.question, steps, tok, obs_tokens=5)
    assert "Step 1: <think>" in text and "Step 3: <think>" in text and "Step 4" not in text
    assert "(1 to 3), or 0 if none?" in text and "Question: " + BRIDGE["question"] in text
    shown = text.split("Step 1: ")[1].split("Step 2: ")[0].split("</search>\n", 1)[1]
    assert len(tok(shown.strip(), add_special_tokens=False)["input_ids"]) <= 6   # tool output cut to obs_tokens
    long = meta_prompt_text(traj.question, steps, tok, obs_tokens=500)
    assert "Ilo Tesk is a sculptor" in long and len(long) > len(text)


def test_answers_are_single_tokens_or_a_clear_error(tiny):
    _, tok = tiny
    ids = answer_token_ids(tok, 5)
    assert len(set(ids)) == 6 and [tok.decode([i]) for i in ids] == [str(j) for j in range(6)]

    class Splitting:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * len(text)}

    with pytest.raises(ValueError, match="single tokens"):
        answer_token_ids(Splitting(), 12)


def test_decision_distribution_is_the_models_next_token_mass_on_the_answers(tiny, traj):
    model, tok = tiny
    prompt = meta_prompt_ids(tok, traj, RefinerConfig(obs_tokens=20))
    short = prompt[:40]
    [p_long, p_short] = decision_distributions(model, tok, [prompt, short], [3, 2], batch_size=2)
    assert len(p_long) == 4 and len(p_short) == 3 and abs(sum(p_long) - 1) < 1e-5
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
    cand = torch.softmax(logits[answer_token_ids(tok, 3)], dim=0).tolist()
    assert p_long == pytest.approx(cand, abs=1e-5)                 # left padding in a batch changes nothing
    assert decision_distributions(model, tok, [short], [2])[0] == pytest.approx(p_short, abs=1e-5)


def test_revise_rule_total_versus_best_and_margin():
    probs = [0.4, 0.3, 0.3]
    assert revise_decision(probs, RefinerConfig(revise_score="total"))       # 0.6 >= 0.4
    assert not revise_decision(probs, RefinerConfig(revise_score="best"))    # 0.3 < 0.4
    assert not revise_decision(probs, RefinerConfig(margin=0.3))             # 0.6 < 0.7
    assert revise_decision([0.5, 0.5], RefinerConfig())                      # ties revise (docs/method.md#meta-refiner)
    assert not revise_decision([1.0], RefinerConfig())
    assert cut_distribution([0.5, 0.1, 0.4]) == pytest.approx([0.2, 0.8])
    with pytest.raises(ValueError):
        cut_distribution([1.0, 0.0])
    with pytest.raises(ValueError):
        RefinerConfig(revise_score="mean")


def test_accuracy_counts_exact_steps_and_accept_reject():
    probs = [[0.9, 0.05, 0.05],   # clean, accepted, argmax 0: right on both
             [0.3, 0.6, 0.1],     # flawed at 1, revised, argmax 1: right on both
             [0.2, 0.7, 0.1],     # flawed at 2, revised, argmax 1: right decision, wrong step
             [0.6, 0.2, 0.2]]     # flawed at 1, accepted: wrong on both
    acc = accuracy(probs, [0, 1, 2, 1], RefinerConfig())
    assert acc == {"n": 4, "exact": 0.5, "accept_reject": 0.75, "flawed_recall": 0.6667, "clean_accept": 1.0,
                   "revise_rate": 0.5, "auc": 1.0}


def test_decision_auc_ranks_p_accept_of_clean_above_flawed():
    from searchr2.refiner import decision_auc

    # clean P(0): 0.8, 0.4; flawed P(0): 0.5, 0.4, 0.1 -> pairs won: (0.8: 3) + (0.4: tie, win) = 4.5 of 6
    probs = [[0.8, 0.2], [0.5, 0.5], [0.4, 0.6], [0.4, 0.6], [0.1, 0.9]]
    assert decision_auc(probs, [0, 1, 0, 2, 1]) == 0.75
    assert decision_auc(probs, [1, 0, 1, 0, 0]) == 0.25      # the classes swapped: 1 - 0.75
    assert decision_auc([[0.7, 0.3]] * 4, [0, 1, 0, 1]) == 0.5    # a constant refiner cannot rank
    assert decision_auc(probs, [0] * 5) is None and decision_auc(probs, [1] * 5) is None


def test_refine_accepts_or_cuts_keeps_the_prefix_and_regenerates(tiny, traj, monkeypatch):
    import random

    import searchr2.refiner as refiner_mod
    from searchr2.refiner import refine
    from tests.test_rollout import Scripted

    model, tok = tiny
    # the refiner's distribution is fixed by the test: trajectory 0 accepted, trajectory 1 revised at step 2
    fixed = {0: [0.9, 0.05, 0.03, 0.02], 1: [0.1, 0.0, 0.9, 0.0]}
    calls = []

    def fake_distributions(model_, tok_, prompts, n_steps, batch_size=8):
        calls.append(len(prompts))   # first round: row 0 gets fixed[0], every other row fixed[1]
        return [fixed[0] if k == 0 and len(calls) == 1 else fixed[1] for k in range(len(prompts))]

    monkeypatch.setattr(refiner_mod, "decision_distributions", fake_distributions)
    regenerated = "<think>again</think>\n<answer>Brel Koltho</answer>"
    scripted = Scripted(model, tok, lambda q, turn: regenerated)
    cfg = RefinerConfig(obs_tokens=20, max_revisions=1)
    final, decisions = refine(scripted, tok, WordRetriever(), [traj, traj], CFG, cfg, random.Random(0))
    assert final[0] is traj and final[1] is not traj
    assert [d.action for d in decisions] == [0, 2] and calls == [2]
    # step 1 and its tool output are kept token for token; step 2 onwards is the Actor's new text
    keep = traj.steps[1]["end"]
    assert final[1].token_ids[:keep] == traj.token_ids[:keep] and final[1].loss_mask[:keep] == traj.loss_mask[:keep]
    assert final[1].answer == "Brel Koltho" and final[1].turns == 2 and final[1].searches == traj.searches[:1]
    for d in decisions:   # one trained token: the emitted answer, after the meta prompt
        assert d.loss_mask == [0] * (len(d.token_ids) - 1) + [1]
        assert tok.decode([d.token_ids[-1]]) == str(d.action)
    # max_revisions bounds the rounds; 0 turns the refiner into a no-op
    calls.clear()
    monkeypatch.setattr(refiner_mod, "decision_distributions",
                        lambda m, t, prompts, n, b=8: calls.append(len(prompts)) or [fixed[1]] * len(prompts))
    # (numbered: with the inline layout the regenerating rollout scores the next rounds' decisions itself)
    final, decisions = refine(scripted, tok, WordRetriever(), [traj], CFG,
                              RefinerConfig(max_revisions=3, layout="numbered", obs_tokens=160), random.Random(0))
    assert len(calls) == 3 and [d.round for d in decisions] == [0, 1, 2]
    calls.clear()
    final, decisions = refine(scripted, tok, WordRetriever(), [traj], CFG, RefinerConfig(max_revisions=3),
                              random.Random(0))
    assert calls == [1] and [d.round for d in decisions][:2] == [0, 1]
    assert all(d.probs != fixed[1] for d in decisions[1:])       # read off the rollout's cache, not re-scored
    assert refine(scripted, tok, WordRetriever(), [traj], CFG, RefinerConfig(max_revisions=0),
                  random.Random(0)) == ([traj], [])


def test_cut_points_follow_the_trimmer_distribution(tiny, traj, monkeypatch):
    import random

    import searchr2.refiner as refiner_mod
    from searchr2.refiner import refine

    model, tok = tiny
    monkeypatch.setattr(refiner_mod, "decision_distributions",
                        lambda m, t, prompts, n, b=8: [[0.0, 0.25, 0.75, 0.0]] * len(prompts))
    monkeypatch.setattr(refiner_mod, "rollout", lambda m, t, r, qs, cfg, prefixes, review=None: prefixes)
    _, decisions = refine(model, tok, WordRetriever(), [traj] * 400, CFG, RefinerConfig(), random.Random(1))
    share = sum(d.action == 2 for d in decisions) / len(decisions)
    assert {d.action for d in decisions} == {1, 2} and 0.68 < share < 0.82


def test_inline_meta_prompt_is_the_trajectory_then_the_review_request(tiny, traj):
    import copy

    from searchr2.refiner import REVIEW_REQUEST, review_suffix_ids

    _, tok = tiny
    ids = meta_prompt_ids(tok, traj, RefinerConfig(layout="inline"))
    assert ids[:len(traj.token_ids)] == traj.token_ids
    # the Actor's message is closed, the request is the next user message, then the reply's header
    suffix = tok.decode(ids[len(traj.token_ids):])
    assert suffix == f"<|im_end|>\n<|im_start|>user\n{REVIEW_REQUEST.format(n=3)}<|im_end|>\n<|im_start|>assistant\n"
    plain = copy.deepcopy(tok)
    plain.chat_template = None                       # no template: the request on its own line
    assert plain.decode(review_suffix_ids(plain, 2)) == f"\n{REVIEW_REQUEST.format(n=2)}\n"
    with pytest.raises(ValueError, match="layout"):
        RefinerConfig(layout="sideways")
    # the numbered layout is a new conversation that reprints the steps
    numbered = tok.decode(meta_prompt_ids(tok, traj, RefinerConfig(layout="numbered", obs_tokens=20)))
    assert numbered.startswith("<|im_start|>user\nYou are reviewing") and "Step 3: " in numbered
    assert numbered.endswith("or 0 if none?<|im_end|>\n<|im_start|>assistant\n")


def test_rollout_scores_the_inline_review_from_its_cache_as_a_fresh_pass_would(tiny):
    """Rows finishing in different rounds (with cache holes, dropped rows and a context cap): the cached
    review equals scoring the whole meta prompt from scratch, and the trajectories are unchanged."""
    from searchr2.refiner import review_hook
    from searchr2.rollout import rollout
    from tests.test_rollout import FakeRetriever, Scripted

    model, tok = tiny
    plans = {
        "free A?": lambda turn: None,
        "answers early?": lambda turn: "<search>orvane bay founder</search>" if turn == 0 else "<answer>x</answer>",
        "stops at once?": lambda turn: "<answer>y</answer>",
        "short then free?": lambda turn: "<search>q</search>" if turn < 2 else None,
    }
    inline = RefinerConfig(layout="inline")
    cfg = RolloutConfig(max_turns=3, max_new_tokens=12, max_obs_tokens=30, batch_size=3, max_context_tokens=600,
                        do_sample=False)
    runs, spent = {}, {}
    for hook in (None, review_hook(tok, inline)):
        runs[hook is None] = rollout(Scripted(model, tok, lambda q, turn: plans[q](turn)), tok, FakeRetriever(),
                                     list(plans), cfg, review=hook, timings=spent)
    assert spent["review"] > 0                                    # what the rl stage counts as refining
    plain, reviewed = runs[True], runs[False]
    assert [t.stop_reason for t in reviewed] == ["context_cap", "answer", "answer", "turn_budget"]
    for a, b in zip(plain, reviewed):
        assert a.review_probs is None and b.review_probs is not None
        assert {**a.to_dict(), "review_probs": None} == {**b.to_dict(), "review_probs": None}
    fresh = decision_distributions(model, tok, [meta_prompt_ids(tok, t, inline) for t in reviewed],
                                   [t.turns for t in reviewed])
    for t, p in zip(reviewed, fresh):
        assert t.review_probs == pytest.approx(p, abs=1e-4), t.question
    # no cache, no review scored here: the refiner then encodes the meta prompt itself
    [t] = rollout(model, tok, FakeRetriever(), ["free A?"], RolloutConfig(max_turns=1, max_new_tokens=8,
                                                                            reuse_cache=False, do_sample=False),
                  review=review_hook(tok, inline))
    assert t.review_probs is None
    assert review_hook(tok, RefinerConfig(layout="numbered")) is None
