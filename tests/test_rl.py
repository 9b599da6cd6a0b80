"""The RL loop (searchr2.rl) on a tiny model: it trains, resumes exactly, and stops on divergence."""
import dataclasses
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

import searchr2.rl as rl
from searchr2.grpo import DivergenceError
from searchr2.models import ModelConfig, TinyModelConfig, load_tokenizer, materialize_base_model
from searchr2.refiner import RefinerConfig
from searchr2.reward import RewardConfig
from searchr2.rl import RLConfig, split_questions, step_questions, train_rl
from searchr2.rollout import RolloutConfig
from searchr2.training import warmup_schedule
from tests.test_teacher import PASSAGES, WordRetriever, _records

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread

ROLLOUT = RolloutConfig(max_turns=1, max_new_tokens=12, max_obs_tokens=30, max_context_tokens=1024, top_k=1,
                        do_sample=True, batch_size=8)
# float32 throughout, so that the DDP and DeepSpeed runs below compute alike (DeepSpeed's bf16 is not autocast)
CFG = RLConfig(group_size=2, lr=1e-3, warmup_ratio=0.0, kl_coef=0.01, steps=3, questions_per_step=2,
               val_questions=2, val_every=0, save_every_steps=1, micro_batch_tokens=4096, freeze_layers=0,
               mixed_precision="fp32", generate_dtype="float32")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": f'"{t}"\n{x}'}) + "\n"
                              for i, (t, x) in enumerate(PASSAGES * 20)))
    materialize_base_model(ModelConfig(source="tiny", seed=5, tiny=TinyModelConfig(vocab_size=400)), root / "m", corpus)
    return root / "m"


def fake_score(records, trajectories, cfg, judge=None):
    """A reward that varies within groups (the tiny model never answers right): the parity of its token ids."""
    return [{"reward": float(sum(t.token_ids) % 2), "outcome": 0.0, "process": None, "searches": len(t.documents),
             "useful": None, "judged": False, "parsed": True, "flags": None} for t in trajectories]


def _run(base, tmp, cfg=CFG, refiner=RefinerConfig(obs_tokens=10)):
    return train_rl(cfg, ROLLOUT, refiner, RewardConfig(process=False), _records(12), load_tokenizer(base),
                    WordRetriever(), None, base, tmp / "out", tmp / "ckpt", tmp / "best", tmp / "live", {"x": "1"})


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def killed_in_step_2(update):
    """``update`` (ppo_update), but the run is killed in step 2, after the step-1 checkpoint."""
    def dying_update(*args, step=0, **kw):
        if step == 2:
            raise KeyboardInterrupt("killed")
        return update(*args, step=step, **kw)

    return dying_update


def test_revision_effect_pairs_each_revised_trajectorys_reward_before_and_after():
    effect = rl.revision_effect([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], seed=0)
    assert effect["n"] == 4 and effect["before"] == 0.25 and effect["after"] == 0.5 and effect["diff"] == 0.25
    assert effect["better"] == 2 and effect["worse"] == 1
    lo, hi = effect["ci95"]
    assert -1.0 <= lo <= 0.25 <= hi <= 1.0
    assert rl.revision_effect([[0.0, 1.0]] * 10, seed=0)["ci95"] == [1.0, 1.0]   # every revision helped
    assert rl.revision_effect([], seed=0)["n"] == 0 and rl.revision_effect([[1.0, 0.0]], seed=0)["ci95"] is None
    records = [{"reward_before": b, "reward_after": a} for b, a in [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]]
    assert rl.revision_effect(records, seed=0) == effect                       # the run's records read as pairs


def test_a_step_lists_every_first_review_with_its_reward_before_and_after(base, monkeypatch):
    """``rl_step(reviews=...)``: one row per reviewed trajectory; a revised one's reward before is its revision
    record's, an accepted one's is unchanged (what ``bench_revision``'s what-if table reads)."""
    monkeypatch.setattr(rl, "score", fake_score)
    from searchr2.models import load_model

    tokenizer, revisions, reviews = load_tokenizer(base), [], []
    lm = load_model(base, "float32", "cpu", inference=True)
    refiner = RefinerConfig(obs_tokens=10, margin=-0.5)          # revises whenever P(0) <= 0.75
    rl.rl_step(lm, tokenizer, WordRetriever(), _records(3), CFG, ROLLOUT, refiner, RewardConfig(process=False),
               None, step=7, revisions=revisions, reviews=reviews)
    assert len(reviews) == 3 * CFG.group_size and {r["step"] for r in reviews} == {7}
    assert all(r["revised"] == (r["p_accept"] <= 0.75) for r in reviews) and revisions
    assert [r["reward_before"] for r in reviews if r["revised"]] == [r["reward_before"] for r in revisions]
    assert [r["reward_after"] for r in reviews if r["revised"]] == [r["reward_after"] for r in revisions]
    assert all(r["reward_before"] == r["reward_after"] for r in reviews if not r["revised"])


def test_questions_are_split_and_drawn_from_the_seed_alone():
    records = _records(12)
    pool, val = split_questions(records, CFG)
    assert len(val) == 2 and not {r["id"] for r in pool} & {r["id"] for r in val}
    assert step_questions(pool, CFG, 3) == step_questions(pool, CFG, 3) != step_questions(pool, CFG, 4)


def test_rl_trains_logs_and_resumes_to_the_same_weights(base, tmp_path, monkeypatch):
    monkeypatch.setattr(rl, "score", fake_score)
    summary = _run(base, tmp_path / "a")
    assert summary["steps"] == 3 and summary["resumed_from_step"] == 0
    trained = _weights(tmp_path / "a/out")
    start = load_file(str(base / "model.safetensors"))
    assert any(not torch.equal(trained[k], start[k]) for k in trained)          # the policy moved
    loss = (tmp_path / "a/live/plots/metrics/loss.tsv").read_text().splitlines()
    assert len(loss) == 4 and (tmp_path / "a/live/plots/metrics/acceptance_rate.tsv").exists()
    assert not any((tmp_path / "a/ckpt").iterdir())                              # cleaned once done

    # a run killed during step 2 (after the step-1 checkpoint) resumes and ends with the same weights
    real_update = rl.ppo_update
    monkeypatch.setattr(rl, "ppo_update", killed_in_step_2(real_update))
    with pytest.raises(KeyboardInterrupt):
        _run(base, tmp_path / "b")
    assert [d.name for d in (tmp_path / "b/ckpt").iterdir()] == ["step-0000001"]
    monkeypatch.setattr(rl, "ppo_update", real_update)
    resumed = _run(base, tmp_path / "b")
    assert resumed["resumed_from_step"] == 1 and resumed["steps"] == 3
    again = _weights(tmp_path / "b/out")
    assert all(torch.equal(again[k], trained[k]) for k in trained)
    assert (tmp_path / "b/live/plots/metrics/loss.tsv").read_text().splitlines() == loss   # no step lost or repeated
    # every revision of the run, before and after, survives the kill (no step's revisions lost or counted twice)
    assert summary["revisions"]["n"] >= 1 and resumed["revisions"] == summary["revisions"]
    # ... and each is listed in results/rl/revisions.jsonl with where it was cut and what it answered
    listed = [json.loads(line) for line in (tmp_path / "a/live/revisions.jsonl").read_text().splitlines()]
    assert len(listed) == summary["revisions"]["n"]
    assert (tmp_path / "b/live/revisions.jsonl").read_text() == (tmp_path / "a/live/revisions.jsonl").read_text()
    for r in listed:
        assert 1 <= r["step"] <= 3 and r["cuts"] and all(1 <= c <= r["turns_before"] for c in r["cuts"])
        assert r["question"] in {q["question"] for q in _records(12)} and 0.0 <= r["group_em"] <= 1.0
    assert rl.revision_effect(listed, seed=0) == summary["revisions"]


def test_a_bf16_run_generates_with_a_bf16_copy_trains_float32_weights_and_resumes_alike(base, tmp_path, monkeypatch):
    """rl.mixed_precision bf16 and rl.generate_dtype bfloat16 (what auto picks on an AMX CPU): the output is
    float32, it moved, every generation ran on the bfloat16 copy, and a killed run resumes to the same weights."""
    monkeypatch.setattr(rl, "score", fake_score)
    cfg = dataclasses.replace(CFG, steps=2, mixed_precision="bf16", generate_dtype="bfloat16")
    dtypes = []
    real_rollout = rl.rollout

    def spying_rollout(lm, *args, **kw):
        dtypes.append(next(lm.parameters()).dtype)
        return real_rollout(lm, *args, **kw)

    monkeypatch.setattr(rl, "rollout", spying_rollout)
    summary = _run(base, tmp_path / "a", cfg)
    assert summary["mixed_precision"] == "bf16" and summary["generate_dtype"] == "bfloat16"
    assert dtypes and set(dtypes) == {torch.bfloat16}
    trained, start = _weights(tmp_path / "a/out"), load_file(str(base / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in trained.values())
    assert any(not torch.equal(trained[k], start[k]) for k in trained)

    real_update = rl.ppo_update
    monkeypatch.setattr(rl, "ppo_update", killed_in_step_2(real_update))
    with pytest.raises(KeyboardInterrupt):
        _run(base, tmp_path / "b", cfg)
    monkeypatch.setattr(rl, "ppo_update", real_update)
    assert _run(base, tmp_path / "b", cfg)["resumed_from_step"] == 1
    again = _weights(tmp_path / "b/out")
    assert all(torch.equal(again[k], trained[k]) for k in trained)


def test_the_generating_copy_is_the_policy_in_float32_and_a_refreshed_copy_otherwise(base):
    from searchr2.models import load_model
    from searchr2.rl import Generator
    from searchr2.training import freeze_bottom

    policy = load_model(base)
    assert Generator(policy, "float32").weights() is policy
    freeze_bottom(policy, 1, "rl")
    gen = Generator(policy, "bfloat16")
    copy = gen.weights()
    assert copy is not policy and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in copy.parameters())
    frozen = policy.model.layers[0].self_attn.q_proj.weight
    trained = policy.model.layers[-1].self_attn.q_proj.weight
    with torch.no_grad():
        trained.add_(1.0)
        frozen.add_(1.0)                     # cannot happen in training: frozen weights are not copied again
    assert gen.weights() is copy
    assert torch.equal(copy.model.layers[-1].self_attn.q_proj.weight, trained.to(torch.bfloat16))
    assert not torch.equal(copy.model.layers[0].self_attn.q_proj.weight, frozen.to(torch.bfloat16))
    # what the copy computes follows the refreshed weight (a packed layer was repacked)
    q_proj = copy.model.layers[-1].self_attn.q_proj
    x = torch.randn(3, q_proj.in_features).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(q_proj(x), torch.nn.functional.linear(x, trained.to(torch.bfloat16), q_proj.bias))


def test_an_unknown_generate_dtype_is_refused():
    with pytest.raises(ValueError, match="generate_dtype must be one of"):
        dataclasses.replace(CFG, generate_dtype="int8")


def test_a_diverging_loss_stops_the_run_naming_the_step(base, tmp_path, monkeypatch):
    monkeypatch.setattr(rl, "score", fake_score)
    with pytest.raises(DivergenceError, match=r"rl step \d+: \|loss\| = .* exceeds rl.loss_limit"):
        _run(base, tmp_path, dataclasses.replace(CFG, loss_limit=1e-9))
    assert not (tmp_path / "out").exists()


def test_a_step_of_equal_rewards_takes_no_optimizer_step(base, tmp_path, monkeypatch):
    """With skip_zero_advantage every sequence of an all-equal batch is left out: the weights stay as they
    were (no AdamW step on a zero gradient), and the curves say nothing was trained."""
    monkeypatch.setattr(rl, "score", lambda records, trajs, cfg, judge=None: [
        {**row, "reward": 1.0} for row in fake_score(records, trajs, cfg, judge)])
    cfg = dataclasses.replace(CFG, steps=2, kl_coef=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = _run(base, tmp_path, cfg)
    # no learning-rate schedule is stepped without an optimizer step (torch warned about that on step 1)
    assert not [w for w in caught if "lr_scheduler" in str(w.message)], [str(w.message) for w in caught]
    assert summary["steps"] == 2
    for name, value in _weights(tmp_path / "out").items():
        assert torch.equal(value, _weights(base)[name]), name
    share = (tmp_path / "live/plots/metrics/trained_share.tsv").read_text().splitlines()[1:]
    assert [float(line.split("\t")[1]) for line in share] == [0.0, 0.0]


def test_the_learning_rate_follows_the_step_number():
    cfg = dataclasses.replace(CFG, lr=1.0, steps=4, ppo_epochs=2, warmup_ratio=0.25)   # warm-up: 2 optimizer steps
    assert [rl.step_learning_rates(cfg, step) for step in (1, 2, 3)] == [[0.0, 0.5], [1.0, 1.0], [1.0, 1.0]]
    # with one epoch a step, the same rates to the bit as the warm-up schedule the stage used to step
    cfg = dataclasses.replace(CFG, lr=3e-4, steps=7, ppo_epochs=1, warmup_ratio=0.3)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = warmup_schedule(optimizer, round(cfg.warmup_ratio * cfg.steps), processes=1)
    for step in range(1, cfg.steps + 1):
        assert rl.step_learning_rates(cfg, step) == [optimizer.param_groups[0]["lr"]], step
        optimizer.step()
        schedule.step()


def test_a_step_without_update_keeps_its_place_in_the_warmup(base, tmp_path, monkeypatch):
    """Step 1's rewards are all equal (no optimizer step, as happens with the tiny and the default models),
    later steps train: they use the rates of steps 2 and 3 of the warm-up, and torch has nothing to warn
    about."""
    calls = []

    def score_with_a_flat_first_step(records, trajs, cfg, judge=None):
        calls.append(1)                   # then 0, 1 in every group (its members are next to each other)
        return [{**row, "reward": 1.0 if len(calls) == 1 else float(i % 2)}
                for i, row in enumerate(fake_score(records, trajs, cfg, judge))]

    monkeypatch.setattr(rl, "score", score_with_a_flat_first_step)
    cfg = dataclasses.replace(CFG, warmup_ratio=0.5)                 # 3 steps: rates 0, lr/2, lr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(base, tmp_path, cfg, refiner=RefinerConfig(enabled=False))
    assert not [w for w in caught if "lr_scheduler" in str(w.message)], [str(w.message) for w in caught]
    curve = {name: [float(line.split("\t")[1]) for line in
                    (tmp_path / f"live/plots/metrics/{name}.tsv").read_text().splitlines()[1:]]
             for name in ("lr", "trained_share")}
    assert curve["trained_share"][0] == 0.0 and curve["trained_share"][1] > 0 and curve["trained_share"][2] > 0
    assert curve["lr"] == pytest.approx([0.0, cfg.lr / 2, cfg.lr])


def test_lora_trains_adapters_and_writes_a_merged_plain_model(base, tmp_path, monkeypatch):
    monkeypatch.setattr(rl, "score", fake_score)
    cfg = dataclasses.replace(CFG, steps=2, lr=5e-2, lora_rank=4, lora_alpha=8.0, freeze_layers=0)
    _run(base, tmp_path, cfg)
    out, start = _weights(tmp_path / "out"), _weights(base)
    assert set(out) == set(start)                       # merged: no lora_A / lora_B keys, loads as the base does
    changed = [k for k in out if not torch.equal(out[k], start[k])]
    assert changed and all("proj" in k for k in changed), changed      # only adapted linear layers moved
    with pytest.raises(ValueError, match="freeze_layers to 0"):
        dataclasses.replace(cfg, freeze_layers=1)


def test_lora_under_zero3_is_refused_before_anything_runs(base, tmp_path, monkeypatch):
    """ZeRO-3 partitions the weights the LoRA merge needs whole on one process: a clear error, no output."""
    import types

    zero3 = types.SimpleNamespace(state=types.SimpleNamespace(deepspeed_plugin=types.SimpleNamespace(zero_stage=3)))
    monkeypatch.setattr(rl, "make_accelerator", lambda *args: zero3)
    cfg = dataclasses.replace(CFG, lora_rank=4, freeze_layers=0)
    with pytest.raises(ValueError, match="rl.lora_rank > 0 is not supported under DeepSpeed ZeRO-3"):
        _run(base, tmp_path, cfg)
    assert not any(tmp_path.iterdir())


def _two_process_run(base, work, launcher: str, env: dict | None = None) -> list[dict]:
    """tests/rl_dist_worker.py on 2 CPU processes (see conftest.launch_two_processes; ``env`` added to
    theirs); each rank's summary, after checking what must hold for every launcher."""
    from conftest import LAUNCHERS, launch_two_processes

    proc = launch_two_processes(launcher, "rl_dist_worker.py", base, work, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["processes"], r["zero_stage"]) for r in ranks] == [(2, LAUNCHERS[launcher])] * 2
    assert ranks[0]["val"] == ranks[1]["val"] and len(ranks[0]["val"]) == 3        # steps 0, 1, 2 on both
    assert ranks[0]["out_sum"] == ranks[1]["out_sum"]
    trained, start = _weights(work / "out"), _weights(base)
    assert any(not torch.equal(trained[k], start[k]) for k in trained)
    share = (work / "live/plots/metrics/trained_share.tsv").read_text().splitlines()[1:]
    values = [float(line.split("\t")[1]) for line in share]
    assert len(values) == 2 and all(v <= 0.5 for v in values) and any(values)   # rank 1 never trained
    return ranks


@pytest.fixture(scope="module")
def two_process_runs(base, tmp_path_factory):
    """Uninterrupted 2-process runs by launcher, each made once: (work dir, rank summaries)."""
    done = {}

    def run_with(launcher: str):
        if launcher not in done:
            work = tmp_path_factory.mktemp(f"rl-{launcher}")
            done[launcher] = work, _two_process_run(base, work, launcher)
        return done[launcher]

    return run_with


@pytest.mark.slow
def test_two_process_data_parallel_run_on_cpu(two_process_runs):
    """`torchrun --nproc_per_node 2` on CPU (gloo): the questions are sharded, a process with nothing to
    train joins the all-reduce, validation EM is over the whole slice, and one output model is written."""
    work, ranks = two_process_runs("ddp")
    assert (work / "out/config.json").exists() and ranks[0]["steps"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("config", ["deepspeed-zero2", "deepspeed-zero3"])
def test_deepspeed_run_trains_the_same_weights_as_ddp(base, two_process_runs, config):
    """The repo's DeepSpeed configs, unchanged but for 2 processes and fp32, on DeepSpeed's CPU
    accelerator: ZeRO-2 shards gradients and optimizer state; ZeRO-3 also the weights (loaded partitioned,
    gathered to generate, a whole frozen reference, processes kept in step when one has fewer
    micro-batches, the output gathered to save). Both must end where the DDP run ends."""
    from conftest import assert_trained_alike

    work, ranks = two_process_runs(config)
    ddp_work, ddp_ranks = two_process_runs("ddp")
    assert ranks[0]["val"] == ddp_ranks[0]["val"]
    assert_trained_alike(_weights(work / "out"), _weights(ddp_work / "out"), _weights(base))


@pytest.mark.slow
def test_a_killed_zero3_run_resumes_from_its_sharded_checkpoint_to_the_same_weights(base, two_process_runs, tmp_path):
    from conftest import assert_killed, launch_two_processes

    assert_killed(launch_two_processes("deepspeed-zero3", "rl_dist_worker.py", base, tmp_path, 1))   # after step 1
    assert not (tmp_path / "out").exists() and [d.name for d in (tmp_path / "ckpt").iterdir()] == ["step-0000001"]
    resumed = _two_process_run(base, tmp_path, "deepspeed-zero3")
    whole_work, whole = two_process_runs("deepspeed-zero3")
    assert resumed[0]["resumed_from_step"] == 1 and resumed[0]["val"] == whole[0]["val"]
    a, b = _weights(whole_work / "out"), _weights(tmp_path / "out")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_acceptances_ride_in_their_trajectorys_row_and_cut_trajectories_keep_a_row_of_their_own():
    from dataclasses import dataclass as dc

    from searchr2.grpo import PackedSequence
    from searchr2.refiner import Decision
    from searchr2.rl import training_sequences

    @dc
    class T:
        token_ids: list
        loss_mask: list

    kept, redone, original = T([1, 2, 3, 4], [0, 1, 1, 0]), T([1, 2, 9, 9], [0, 1, 1, 1]), [1, 2, 3, 3, 5]
    decisions = [Decision(0, 0, 0, [0.9, 0.1], kept.token_ids + [7, 8, 0], [0] * 6 + [1]),       # accepted: packed
                 Decision(1, 0, 1, [0.2, 0.8], original + [7, 8, 1], [0] * 7 + [1])]             # cut: its own row
    seqs, adv, w = training_sequences([kept, redone], [0.5, -0.5], decisions, 0.25)
    assert isinstance(seqs[0], PackedSequence) and seqs[0].token_ids == decisions[0].token_ids
    assert seqs[1] is redone and seqs[2] is decisions[1]
    assert adv == [0.5, -0.5, -0.5] and w == [1.25, 1.0, 0.25]
    # refiner_weight 0: the decisions are not trained at all
    assert training_sequences([kept, redone], [0.5, -0.5], decisions, 0.0) == ([kept, redone], [0.5, -0.5], [1.0, 1.0])
    # numbered meta prompts share no prefix: every decision is a row of its own
    numbered = [dataclasses.replace(d, token_ids=[5, 5] + d.token_ids, loss_mask=[0, 0] + d.loss_mask)
                for d in decisions]
    seqs, _, w = training_sequences([kept, redone], [0.5, -0.5], numbered, 0.25)
    assert seqs[:2] == [kept, redone] and len(seqs) == 4 and w == [1.0, 1.0, 0.25, 0.25]
