"""The hybrid reward (searchr2.reward): values, the correctness gate, the process switch, summaries."""
import dataclasses
import random

import pytest

from searchr2.judge import JudgeResult, RuleJudge
from searchr2.reward import RewardConfig, hybrid_reward, reward_stats, score
from searchr2.rollout import Trajectory

Q = "Who founded Orvane Bay?"
GOOD = {"id": "1", "title": "Orvane Bay", "text": "Orvane Bay was founded by Mira Tesk.", "score": 2.0}
NOISE = {"id": "2", "title": "Lumsey Dal", "text": "A river in the south.", "score": 1.0}


def traj(answer, collections, question=Q):
    return Trajectory(question=question, token_ids=[], loss_mask=[], prompt_len=0,
                      searches=[f"q{i}" for i in range(len(collections))], documents=[list(c) for c in collections],
                      answer=answer)


def record(question=Q, golds=("Mira Tesk",)):
    return {"id": "x", "question": question, "golden_answers": list(golds), "metadata": {}}


class RecordingJudge:
    """Says every collection is useful, and remembers which trajectories it was asked about."""

    name = "recording"

    def __init__(self, useful=None):
        self.calls: list[list] = []
        self.useful = useful

    def judge(self, records, trajectories):
        self.calls.append(list(trajectories))
        return [JudgeResult(useful=len(t.documents) if self.useful is None else self.useful,
                            searches=len(t.documents)) for t in trajectories]


def test_config_defaults_and_validation():
    cfg = RewardConfig()
    assert (cfg.process, cfg.judge, cfg.judge_model) == (True, "rule", "")
    with pytest.raises(ValueError, match="judge must be one of"):
        RewardConfig(judge="gpt")
    with pytest.raises(ValueError, match="judge_model"):
        RewardConfig(judge="llm")
    RewardConfig(judge="llm", process=False)                 # no judge needed when the process part is off
    RewardConfig(judge="llm", judge_model="/models/judge")
    with pytest.raises(ValueError, match="judge=rule"):
        RewardConfig(judge_model="/models/judge")
    with pytest.raises(ValueError, match="judge_batch_size"):
        RewardConfig(judge_batch_size=0)
    with pytest.raises(ValueError, match="judge_doc_tokens"):
        RewardConfig(judge_doc_tokens=True)
    with pytest.raises(ValueError, match="judge_dtype"):
        RewardConfig(judge_dtype="float64")
    with pytest.raises(ValueError, match="process"):
        RewardConfig(process="yes")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.process = False


def test_hybrid_reward_values():
    assert hybrid_reward(0.0, 0.0) == 0.0
    assert hybrid_reward(0.0, 1.0) == 0.0
    assert hybrid_reward(1.0, 0.0) == 1.0
    assert hybrid_reward(1.0, 0.5) == 1.5
    assert hybrid_reward(1.0, 1.0) == 2.0
    assert hybrid_reward(1.0, 1.0, use_process=False) == 1.0
    with pytest.raises(ValueError):
        hybrid_reward(0.5, 0.0)
    with pytest.raises(ValueError):
        hybrid_reward(1.0, 1.5)


def test_score_with_rule_judge():
    recs = [record()] * 5
    ts = [traj("Mira Tesk", [[GOOD], [NOISE]]),     # right, 1 of 2 useful
          traj("mira tesk.", [[GOOD]]),             # right (normalised), 1 of 1
          traj("Mira Tesk", []),                    # right without searching: M = 0
          traj("Varen Koltho", [[GOOD]]),           # wrong: 0 whatever it found
          traj(None, [[GOOD]])]                     # no answer: 0
    rows = score(recs, ts, RewardConfig())
    assert [r["reward"] for r in rows] == [1.5, 2.0, 1.0, 0.0, 0.0]
    assert [r["outcome"] for r in rows] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert [r["process"] for r in rows] == [0.5, 1.0, 0.0, None, None]
    assert [r["useful"] for r in rows] == [1, 1, 0, None, None]
    assert [r["searches"] for r in rows] == [2, 1, 0, 1, 1]
    assert [r["judged"] for r in rows] == [True, True, True, False, False]
    assert rows[0]["flags"] == [1, 0] and rows[3]["flags"] is None


def test_process_off_is_outcome_only_and_never_judges():
    judge = RecordingJudge()
    recs = [record()] * 3
    ts = [traj("Mira Tesk", [[GOOD]]), traj("nope", [[GOOD]]), traj("Mira Tesk", [])]
    rows = score(recs, ts, RewardConfig(process=False), judge)
    assert [r["reward"] for r in rows] == [1.0, 0.0, 1.0]
    assert judge.calls == []
    assert all(r["process"] is None and not r["judged"] for r in rows)


def test_judge_is_called_only_for_correct_answers():
    judge = RecordingJudge()
    recs = [record(), record(), record(), record()]
    ts = [traj("wrong", [[GOOD]]), traj("Mira Tesk", [[NOISE]]), traj(None, [[GOOD]]), traj("Mira  TESK", [[GOOD]])]
    rows = score(recs, ts, RewardConfig(), judge)
    assert len(judge.calls) == 1                               # one batched call
    assert judge.calls[0] == [ts[1], ts[3]]                    # exactly the correct ones, in order
    assert [r["reward"] for r in rows] == [0.0, 2.0, 0.0, 2.0]
    judge = RecordingJudge()
    score(recs[:1], ts[:1], RewardConfig(), judge)
    assert judge.calls == []                                   # nothing correct: no call at all


def test_reward_range_on_random_trajectories():
    rng = random.Random(0)
    pool = [GOOD, NOISE] + [{"id": str(i), "title": f"T{i}", "text": rng.choice(["Mira Tesk.", "x"]), "score": 0.0}
                            for i in range(3, 9)]
    recs, ts = [], []
    for _ in range(200):
        cols = [rng.sample(pool, rng.randint(0, 3)) for _ in range(rng.randint(0, 5))]
        ts.append(traj(rng.choice(["Mira Tesk", "Varen", None]), cols))
        recs.append(record())
    rows = score(recs, ts, RewardConfig())
    assert {r["reward"] for r in rows if r["outcome"] == 0} == {0.0}
    assert all(1.0 <= r["reward"] <= 2.0 for r in rows if r["outcome"] == 1)
    assert any(1.0 < r["reward"] < 2.0 for r in rows) and any(r["reward"] == 2.0 for r in rows)


def test_alignment_and_judge_output_are_checked():
    with pytest.raises(ValueError, match="align"):
        score([record()], [], RewardConfig(), RuleJudge())
    with pytest.raises(ValueError, match="misaligned"):
        score([record(question="Where is Lumsey Dal?")], [traj("Mira Tesk", [])], RewardConfig(), RuleJudge())
    # the question is compared after normalisation (whitespace, trailing "?")
    score([record(question="  Who founded Orvane Bay ")], [traj("Mira Tesk", [])], RewardConfig(), RuleJudge())
    with pytest.raises(RuntimeError, match="does not fit"):
        score([record()], [traj("Mira Tesk", [[GOOD]])], RewardConfig(), RecordingJudge(useful=2))

    class Short(RecordingJudge):
        def judge(self, records, trajectories):
            return []

    with pytest.raises(RuntimeError, match="returned 0 results"):
        score([record()], [traj("Mira Tesk", [[GOOD]])], RewardConfig(), Short())


def test_default_judge_is_built_from_config():
    rows = score([record()], [traj("Mira Tesk", [[GOOD], [GOOD]])], RewardConfig())
    assert rows[0]["reward"] == 1.5                            # the rule judge: the repeat is not useful


def test_reward_stats():
    recs = [record()] * 4
    ts = [traj("Mira Tesk", [[GOOD], [NOISE]]), traj("Mira Tesk", [[GOOD]]), traj("no", [[GOOD], [NOISE], [GOOD]]),
          traj("Mira Tesk", [])]
    s = reward_stats(score(recs, ts, RewardConfig()))
    assert s["n"] == 4
    assert s["reward"] == pytest.approx((1.5 + 2.0 + 0.0 + 1.0) / 4, abs=1e-4)
    assert s["em"] == 0.75
    assert s["process_correct"] == pytest.approx((0.5 + 1.0 + 0.0) / 3, abs=1e-4)
    assert s["useful_share"] == pytest.approx(2 / 3, abs=1e-4)   # judged collections only: 2 useful of 3
    assert s["searches"] == 1.5
    assert (s["judged"], s["unparsable"]) == (3, 0)
    s = reward_stats(score(recs, ts, RewardConfig(process=False)))
    assert s["process_correct"] is None and s["useful_share"] is None and s["judged"] == 0
    assert reward_stats([])["n"] == 0


def test_reward_stats_counts_unparsable():
    class Garbled(RecordingJudge):
        def judge(self, records, trajectories):
            return [JudgeResult(useful=0, searches=len(t.documents), parsed=False, reply="??") for t in trajectories]

    rows = score([record()] * 2, [traj("Mira Tesk", [[GOOD]]), traj("Mira Tesk", [[NOISE]])], RewardConfig(), Garbled())
    assert [r["reward"] for r in rows] == [1.0, 1.0]
    assert reward_stats(rows)["unparsable"] == 2
