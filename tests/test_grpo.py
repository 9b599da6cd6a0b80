"""The GRPO objective (searchr2.grpo): advantages, log-probabilities, the clipped loss with k3 KL, the update.

Loss tests use hand-made tensors with known answers; log-probabilities and the update run on a tiny
random Qwen2 model.
"""
import copy
import math
from dataclasses import dataclass, replace

import pytest
import torch

from searchr2.grpo import (KL_CLAMP, DivergenceError, GRPOConfig, TokenLogProbs, check_finite, collate_sequences,
                           compute_logprobs, group_advantages, grpo_loss, kl_k3, ppo_update, select_for_update,
                           sequence_logprobs)
from searchr2.models import load_model
from searchr2.training import make_optimizer
from conftest import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread


@dataclass
class Seq:
    token_ids: list
    loss_mask: list


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("grpo"), seed=2)


@pytest.fixture
def lm(base):
    return load_model(base)


def random_seq(gen: torch.Generator, length: int, vocab: int, spans: list[tuple[int, int]]) -> Seq:
    """Random ids; the model "generated" the tokens in ``spans`` (mask 1), the rest is prompt/tool text."""
    ids = torch.randint(0, vocab, (length,), generator=gen).tolist()
    mask = [0] * length
    for a, b in spans:
        mask[a:b] = [1] * (b - a)
    return Seq(ids, mask)


# ------------------------------------------------------------------------------------------ advantages

def test_group_advantages_hand_values_sample_std():
    adv = group_advantages([1, 0, 0, 0, 0, 2, 1, 2, 1, 1.5], group_size=5, eps=0.0)
    std = math.sqrt((0.8 ** 2 + 4 * 0.2 ** 2) / 4)               # n - 1 in the denominator
    assert adv[:5] == pytest.approx([0.8 / std] + [-0.2 / std] * 4)
    assert adv[:5] == pytest.approx([1.7888544, -0.4472136, -0.4472136, -0.4472136, -0.4472136])
    # second group: mean 1.5, deviations ±0.5 and 0, sample std sqrt(1.0 / 4) = 0.5
    assert adv[5:] == pytest.approx([1.0, -1.0, 1.0, -1.0, 0.0])
    assert sum(adv[:5]) == pytest.approx(0.0, abs=1e-12)


def test_group_advantages_equal_rewards_and_eps():
    assert group_advantages([1.0] * 5 + [0.0] * 5, 5) == [0.0] * 10
    assert group_advantages([0.1] * 3, 3) == [0.0, 0.0, 0.0]       # exactly 0, not rounding noise
    big = group_advantages([0, 1], 2, eps=1.0)                     # std of [0, 1] (n-1) = sqrt(0.5)
    assert big == pytest.approx([-0.5 / (math.sqrt(0.5) + 1), 0.5 / (math.sqrt(0.5) + 1)])


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of group_size=5"):
        group_advantages([1, 0, 0, 0, 0, 1], 5)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages([1, 0], 1)
    with pytest.raises(ValueError, match="non-finite"):
        group_advantages([1, float("nan")], 2)


# ------------------------------------------------------------------------------------ log-probabilities

def test_sequence_logprobs_match_full_logits(lm):
    gen = torch.Generator().manual_seed(0)
    vocab = lm.config.vocab_size
    seqs = [random_seq(gen, 23, vocab, [(5, 9), (14, 23)]), random_seq(gen, 9, vocab, [(3, 6)]),
            random_seq(gen, 16, vocab, [(15, 16)])]
    batch = collate_sequences(seqs)
    assert batch["input_ids"].shape == (3, 23)
    for row, s in enumerate(seqs):                                  # the mask comes back token-aligned
        assert batch["loss_mask"][row, :len(s.loss_mask)].tolist() == s.loss_mask
        assert batch["loss_mask"][row, len(s.loss_mask):].sum() == 0
    got = sequence_logprobs(lm, **batch)

    with torch.no_grad():
        full = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().log_softmax(-1)
    want = torch.zeros_like(got)
    want[:, 1:] = full[:, :-1].gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["loss_mask"].bool()
    assert got.shape == batch["input_ids"].shape and got.dtype == torch.float32
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)
    assert (got[~mask] == 0).all()
    assert (got[mask] < 0).all()

    # the training module and the no-grad helper give the same numbers, and the module is differentiable
    module_out = TokenLogProbs(lm)(**batch)
    assert module_out.requires_grad
    torch.testing.assert_close(module_out, got)
    per_seq = compute_logprobs(lm, seqs, micro_batch_tokens=32)     # forces several micro-batches
    for row, s in enumerate(seqs):
        assert per_seq[row].shape == (len(s.token_ids),) and not per_seq[row].requires_grad
        torch.testing.assert_close(per_seq[row], got[row, :len(s.token_ids)].detach(), atol=1e-5, rtol=1e-5)


def test_collate_and_logprobs_reject_bad_masks(lm):
    with pytest.raises(ValueError, match="position 0"):
        collate_sequences([Seq([1, 2, 3], [1, 1, 0])])
    with pytest.raises(ValueError, match="no 1"):
        collate_sequences([Seq([1, 2, 3], [0, 0, 0])])
    with pytest.raises(ValueError, match="entries"):
        collate_sequences([Seq([1, 2, 3], [0, 1])])
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="position 0"):
        sequence_logprobs(lm, ids, torch.ones_like(ids), torch.tensor([[1, 1, 0]]))


# ------------------------------------------------------------------------------------------------ loss

def _one_seq(ratios, adv, clip_eps=0.2):
    old = torch.zeros(1, len(ratios))
    logp = torch.log(torch.tensor([ratios])).requires_grad_()
    loss, stats = grpo_loss(logp, old, None, torch.tensor([adv]), torch.ones(1, len(ratios)), clip_eps, 0.0)
    loss.backward()
    return loss.item(), stats, logp.grad[0]


def test_clipped_surrogate_positive_advantage():
    loss, stats, grad = _one_seq([0.5, 1.0, 1.1, 1.5], +1.0)
    # -min(r, clip(r)): 1.5 is clipped to 1.2; 0.5 is not (the unclipped term is the smaller one)
    assert loss == pytest.approx(-(0.5 + 1.0 + 1.1 + 1.2) / 4)
    assert stats["clip_frac"] == pytest.approx(0.25)
    assert stats["ratio"] == pytest.approx((0.5 + 1.0 + 1.1 + 1.5) / 4)
    # d/dlogp of -r*A is -r*A (per token, /4 tokens); the clipped token has no gradient
    torch.testing.assert_close(grad, torch.tensor([-0.5, -1.0, -1.1, 0.0]) / 4)


def test_clipped_surrogate_negative_advantage():
    loss, stats, grad = _one_seq([0.5, 1.0, 1.1, 1.5], -2.0)
    # -min(-2r, -2clip(r)) = 2 max(r, clip(r)): 0.5 is clipped up to 0.8; 1.5 keeps its full ratio
    assert loss == pytest.approx(2 * (0.8 + 1.0 + 1.1 + 1.5) / 4)
    assert stats["clip_frac"] == pytest.approx(0.25)
    assert stats["adv_abs"] == pytest.approx(2.0)
    torch.testing.assert_close(grad, torch.tensor([0.0, 2.0, 2.2, 3.0]) / 4)


def test_clip_eps_changes_what_is_clipped():
    _, stats, _ = _one_seq([0.5, 1.0, 1.1, 1.5], +1.0, clip_eps=0.05)     # 1.1 is now beyond 1.05 too
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_k3_kl():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(kl_k3(logp, logp.clone()), torch.zeros(3))
    for ref in (logp + 0.3, logp - 0.3, logp - 4.0):
        kl = kl_k3(logp, ref)
        assert (kl > 0).all()
        d = ref - logp
        torch.testing.assert_close(kl, torch.exp(d) - d - 1)
    # far from the reference the estimate is capped (exp(5) - 6 = 142 > KL_CLAMP), and never overflows
    assert torch.equal(kl_k3(logp, logp + 5.0), torch.full((3,), KL_CLAMP))
    assert torch.equal(kl_k3(torch.tensor([-500.0]), torch.tensor([0.0])), torch.tensor([KL_CLAMP]))


def test_kl_enters_the_loss_only_with_a_reference_and_a_coefficient():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    old, mask, adv = logp.clone(), torch.ones(1, 3), torch.tensor([0.0])
    ref = logp + torch.tensor([[0.5, -0.5, 0.0]])
    loss, stats = grpo_loss(logp, old, ref, adv, mask, 0.2, 0.1)
    expected_kl = kl_k3(logp, ref).mean()
    assert loss.item() == pytest.approx(0.1 * expected_kl.item())
    assert stats["kl"] == pytest.approx(expected_kl.item()) and stats["kl_loss"] == pytest.approx(loss.item())
    no_coef, stats0 = grpo_loss(logp, old, ref, adv, mask, 0.2, 0.0)
    assert no_coef.item() == 0.0 and stats0["kl"] == pytest.approx(expected_kl.item())   # still logged
    no_ref, stats1 = grpo_loss(logp, old, None, adv, mask, 0.2, 0.1)
    assert no_ref.item() == 0.0 and stats1["kl"] == 0.0


def test_on_policy_gradient_is_plain_policy_gradient_averaged_per_sequence():
    """With old == current (ratio 1) and ref == current, ∂loss/∂logp_t = -Â_i·m_t / n_i / B."""
    gen = torch.Generator().manual_seed(1)
    B, T = 4, 7
    logp = (-torch.rand(B, T, generator=gen) * 3).requires_grad_()
    mask = torch.zeros(B, T)
    for i, (a, b) in enumerate([(1, 7), (2, 4), (5, 6), (1, 3)]):
        mask[i, a:b] = 1
    adv = torch.tensor([1.5, -0.7, 0.3, -2.0])
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, 0.2, 0.5)
    loss.backward()
    want = -adv[:, None] * mask / mask.sum(1, keepdim=True) / B
    torch.testing.assert_close(logp.grad, want)
    assert stats["clip_frac"] == 0.0 and stats["ratio"] == pytest.approx(1.0) and stats["kl"] == 0.0
    assert stats["tokens"] == mask.sum().item() and stats["sequences"] == B

    # the KL term adds β(1 - exp(ref - logp)) per token, with the same averaging
    logp.grad = None
    ref = logp.detach() + 0.25
    grpo_loss(logp, logp.detach(), ref, adv, mask, 0.2, 0.5)[0].backward()
    want_kl = want + 0.5 * (1 - math.exp(0.25)) * mask / mask.sum(1, keepdim=True) / B
    torch.testing.assert_close(logp.grad, want_kl)


def test_long_and_short_sequences_weigh_equally():
    logp = torch.zeros(2, 9, requires_grad=True)
    mask = torch.zeros(2, 9)
    mask[0, 1:9] = 1                                                    # 8 tokens
    mask[1, 1:2] = 1                                                    # 1 token
    adv = torch.tensor([1.0, 1.0])
    loss, stats = grpo_loss(logp, logp.detach(), None, adv, mask, 0.2, 0.0)
    assert loss.item() == pytest.approx(-1.0)                           # mean of the two sequence means (-1, -1)
    loss.backward()
    assert logp.grad[0, 1:9].sum().item() == pytest.approx(-0.5)        # each sequence carries half of the loss
    assert logp.grad[1, 1].item() == pytest.approx(-0.5)
    # a token mean would have given the short sequence 1/9 of the weight; a sequence mean gives 1/2
    adv2 = torch.tensor([1.0, -1.0])
    assert grpo_loss(logp, logp.detach(), None, adv2, mask, 0.2, 0.0)[0].item() == pytest.approx(0.0)


def test_weight_zero_gives_exactly_zero_gradient_and_a_weighted_mean():
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, -3.0], [0.0, -1.0, -1.0]], requires_grad=True)
    old = logp.detach() + torch.tensor([[0.0, 0.1, -0.3], [0.0, 0.4, -0.2], [0.0, 0.0, 0.0]])   # off-policy
    ref = logp.detach() - 0.2
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 1, 0]])
    adv = torch.tensor([1.0, -2.0, 0.5])
    weights = torch.tensor([1.0, 0.0, 0.5])
    loss, _ = grpo_loss(logp, old, ref, adv, mask, 0.2, 0.1, weights)
    loss.backward()
    assert torch.equal(logp.grad[1], torch.zeros(3))
    assert logp.grad[0].abs().sum() > 0 and logp.grad[2].abs().sum() > 0
    # the weight-0 row does not dilute the others: same loss as without it, weighted by 1 and 0.5
    keep = [0, 2]
    alone, _ = grpo_loss(logp[keep], old[keep], ref[keep], adv[keep], mask[keep], 0.2, 0.1, weights[keep])
    assert loss.item() == pytest.approx(alone.item())
    singles = [grpo_loss(logp[[i]], old[[i]], ref[[i]], adv[[i]], mask[[i]], 0.2, 0.1)[0].item() for i in keep]
    assert loss.item() == pytest.approx((1.0 * singles[0] + 0.5 * singles[1]) / 1.5)


def test_check_finite():
    check_finite(1.5, step=3)
    check_finite(torch.tensor(-80.0), step=3, limit=100.0)
    with pytest.raises(FloatingPointError, match="rl step 7: the loss is nan"):
        check_finite(torch.tensor(float("nan")), step=7)
    with pytest.raises(DivergenceError, match="rl step 2: the loss is inf"):
        check_finite(float("inf"), step=2)
    with pytest.raises(DivergenceError, match=r"rl step 4: \|loss\| = 150 exceeds rl.loss_limit=100"):
        check_finite(-150.0, step=4, limit=100.0)
    check_finite(1e9, step=4, limit=0.0)                                # 0 disables the bound


def test_config_defaults_and_validation():
    cfg = GRPOConfig()
    assert (cfg.group_size, cfg.clip_eps, cfg.kl_coef, cfg.ppo_epochs, cfg.refiner_weight) == (5, 0.2, 0.001, 1, 1.0)
    for bad in ({"group_size": 1}, {"clip_eps": 0.0}, {"kl_coef": -1.0}, {"ppo_epochs": 0}, {"lr": 0.0},
                {"refiner_weight": -0.5}, {"micro_batch_tokens": 2.5}, {"loss_limit": -1.0}, {"group_size": True}):
        with pytest.raises(ValueError, match="rl config"):
            GRPOConfig(**bad)


# ---------------------------------------------------------------------------------------------- update

def _accelerated(lm, cfg):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    lm.train()
    model, optimizer = accelerator.prepare(TokenLogProbs(lm), make_optimizer(lm, cfg.lr, cfg.weight_decay))
    return accelerator, model, optimizer


def _total_logp(lm, seq) -> float:
    return compute_logprobs(lm, [seq], 4096)[0].sum().item()


def test_update_raises_the_logprob_of_a_positive_advantage_sequence(lm):
    gen = torch.Generator().manual_seed(3)
    vocab = lm.config.vocab_size
    good, bad = random_seq(gen, 20, vocab, [(6, 20)]), random_seq(gen, 12, vocab, [(4, 12)])
    cfg = GRPOConfig(lr=3e-3, micro_batch_tokens=20, kl_coef=0.01, ppo_epochs=2)   # two micro-batches per step
    ref = compute_logprobs(lm, [good, bad], 4096)
    before = [_total_logp(lm, good), _total_logp(lm, bad)]
    accelerator, model, optimizer = _accelerated(lm, cfg)
    for step in range(3):
        stats = ppo_update(accelerator, model, optimizer, [good, bad], [1.0, -1.0], None, ref, cfg, step=step)
        assert stats["tokens"] == 14 + 8 and stats["sequences"] == 2 and stats["epochs"] == 2
        assert stats["adv_abs"] == pytest.approx(1.0) and math.isfinite(stats["grad_norm"])
        assert stats["ratio"] != pytest.approx(1.0, abs=1e-7)    # the second epoch is off-policy
    assert _total_logp(lm, good) > before[0] + 1.0
    assert _total_logp(lm, bad) < before[1] - 1.0


def test_weight_zero_sequences_are_not_trained_and_do_not_dilute(base):
    gen = torch.Generator().manual_seed(4)
    lm_a, lm_b = load_model(base), load_model(base)
    vocab = lm_a.config.vocab_size
    actor, meta = random_seq(gen, 15, vocab, [(5, 15)]), random_seq(gen, 30, vocab, [(29, 30)])
    cfg = GRPOConfig(lr=1e-2, kl_coef=0.0)
    old = compute_logprobs(lm_a, [actor, meta], 4096)

    acc, model, opt = _accelerated(lm_a, cfg)
    stats = ppo_update(acc, model, opt, [actor, meta], [1.0, -1.0], old, None, cfg, weights=[1.0, 0.0])
    assert stats["sequences"] == 1 and stats["tokens"] == 10           # the weight-0 sequence was skipped
    acc, model, opt = _accelerated(lm_b, cfg)
    ppo_update(acc, model, opt, [actor], [1.0], [old[0]], None, cfg)
    for (name, a), b in zip(lm_a.named_parameters(), lm_b.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(lm_a.parameters(), load_model(base).parameters()))


def test_update_stops_before_touching_the_weights_when_the_loss_diverges(lm):
    gen = torch.Generator().manual_seed(5)
    seq = random_seq(gen, 10, lm.config.vocab_size, [(4, 10)])
    cfg = GRPOConfig(lr=1e-2)
    accelerator, model, optimizer = _accelerated(lm, cfg)
    before = copy.deepcopy(lm.state_dict())
    with pytest.raises(DivergenceError, match="rl step 12: the loss is nan"):
        ppo_update(accelerator, model, optimizer, [seq], [float("nan")], None, None, cfg, step=12)
    for k, v in lm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in lm.parameters())              # no NaN gradient left to leak into a later step
    with pytest.raises(DivergenceError, match="exceeds rl.loss_limit"):
        ppo_update(accelerator, model, optimizer, [seq], [1e6], None, None, replace(cfg, loss_limit=10.0), step=1)
    with pytest.raises(ValueError, match="weight > 0"):
        ppo_update(accelerator, model, optimizer, [seq], [1.0], None, None, cfg, weights=[0.0])


def test_the_update_steps_at_the_learning_rate_given_for_each_epoch(base):
    gen = torch.Generator().manual_seed(6)
    lm = load_model(base)
    seq = random_seq(gen, 12, lm.config.vocab_size, [(4, 12)])
    cfg = GRPOConfig(lr=1e-2, kl_coef=0.0, ppo_epochs=2)
    accelerator, model, optimizer = _accelerated(lm, cfg)
    before = copy.deepcopy(lm.state_dict())
    stats = ppo_update(accelerator, model, optimizer, [seq], [1.0], None, None, cfg, lrs=[0.0, 0.0])
    assert stats["lr"] == 0.0 and [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0]
    for k, v in lm.state_dict().items():                             # two AdamW steps at rate 0: nothing moved
        assert torch.equal(v, before[k]), k
    stats = ppo_update(accelerator, model, optimizer, [seq], [1.0], None, None, cfg, lrs=[0.0, 5e-3])
    assert stats["lr"] == 0.0 and [g["lr"] for g in optimizer.param_groups] == [5e-3, 5e-3]
    assert any(not torch.equal(v, before[k]) for k, v in lm.state_dict().items())   # the second step moved them
    with pytest.raises(ValueError, match="lrs has 1 learning rates for 2 ppo_epochs"):
        ppo_update(accelerator, model, optimizer, [seq], [1.0], None, None, cfg, lrs=[1e-3])


def test_select_for_update():
    cfg = GRPOConfig()
    assert select_for_update([0.0, 1.2, -0.5, 0.0], [1.0, 1.0, 0.0, 0.5], cfg) == [1]
    assert select_for_update([0.0, 1.2, -0.5, 0.0], [1.0, 1.0, 0.0, 0.5], replace(cfg, skip_zero_advantage=False)) \
        == [0, 1, 3]
    with pytest.raises(ValueError, match="skip_zero_advantage must be true or false"):
        GRPOConfig(skip_zero_advantage="yes")


def test_leaving_out_zero_advantage_sequences_changes_nothing_without_kl(base):
    """Without KL a zero-advantage sequence has exactly zero gradient: leaving it out (and keeping its weight
    in the normaliser) must give the same weights as forwarding it."""
    gen = torch.Generator().manual_seed(6)
    lm_a, lm_b = load_model(base), load_model(base)
    vocab = lm_a.config.vocab_size
    seqs = [random_seq(gen, 14, vocab, [(4, 14)]), random_seq(gen, 18, vocab, [(6, 18)]),
            random_seq(gen, 11, vocab, [(3, 11)])]
    adv = [0.9, 0.0, -0.9]
    cfg = GRPOConfig(lr=1e-2, kl_coef=0.0)

    def sgd(lm):        # plain SGD: Adam would blow float noise in untouched embedding rows up to full steps
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
        lm.train()
        return (accelerator, *accelerator.prepare(TokenLogProbs(lm), torch.optim.SGD(lm.parameters(), lr=0.1)))

    acc, model, opt = sgd(lm_a)
    ppo_update(acc, model, opt, seqs, adv, None, None, cfg)
    keep = select_for_update(adv, [1.0] * 3, cfg)
    assert keep == [0, 2]
    acc, model, opt = sgd(lm_b)
    stats = ppo_update(acc, model, opt, [seqs[i] for i in keep], [adv[i] for i in keep], None, None, cfg,
                       total_weight=3.0)
    assert stats["sequences"] == 2
    for (name, a), b in zip(lm_a.named_parameters(), lm_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
    with pytest.raises(ValueError, match="total_weight"):
        ppo_update(acc, model, opt, seqs, adv, None, None, cfg, total_weight=1.0)


def test_a_packed_shared_prefix_pair_trains_exactly_as_the_two_sequences_apart(base):
    """A trajectory and a decision whose meta prompt is that trajectory plus a request: one row with
    per-token coefficients gives the loss, statistics and gradient of the two rows trained apart (with KL)."""
    from searchr2.grpo import PackedSequence, pack_shared_prefix

    gen = torch.Generator().manual_seed(7)
    lm_a, lm_b = load_model(base), load_model(base)
    vocab = lm_a.config.vocab_size
    traj = random_seq(gen, 16, vocab, [(4, 9), (12, 16)])
    request = torch.randint(0, vocab, (6,), generator=gen).tolist()
    decision = Seq(traj.token_ids + request, [0] * 21 + [1])
    other = random_seq(gen, 12, vocab, [(5, 12)])
    ref = compute_logprobs(load_model(base), [traj, decision, other], 4096)
    cfg = GRPOConfig(lr=1e-2, kl_coef=0.05)
    packed = pack_shared_prefix(traj, 1.0, decision, 0.5)
    assert isinstance(packed, PackedSequence) and packed.weight == 1.5 and packed.token_ids == decision.token_ids
    assert packed.loss_mask == traj.loss_mask + [0] * 5 + [1]
    assert sum(packed.token_weights) == pytest.approx(1.5) and packed.token_weights[-1] == 0.5

    def grads(lm, seqs, adv, weights, ref_logp):
        accelerator, model, optimizer = _accelerated(lm, cfg)
        optimizer.step = lambda: None                            # keep the weights: compare gradients
        captured = {}
        real_zero = optimizer.zero_grad

        def keep_grads(set_to_none=True):
            captured.update({n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None})
            real_zero(set_to_none=set_to_none)

        optimizer.zero_grad = keep_grads
        stats = ppo_update(accelerator, model, optimizer, seqs, adv, None, ref_logp, cfg, weights)
        return stats, captured

    apart, g_apart = grads(lm_a, [traj, decision, other], [0.8, 0.8, -1.1], [1.0, 0.5, 1.0], ref)
    ref_packed = compute_logprobs(load_model(base), [packed, other], 4096)
    together, g_together = grads(lm_b, [packed, other], [0.8, -1.1], [1.5, 1.0], ref_packed)
    for key in ("loss", "pg_loss", "kl_loss", "clip_frac", "ratio", "kl", "tokens"):
        assert together[key] == pytest.approx(apart[key], rel=1e-5, abs=1e-7), key
    assert g_apart.keys() == g_together.keys() and g_apart
    for name, g in g_apart.items():
        torch.testing.assert_close(g_together[name], g, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="does not begin"):
        pack_shared_prefix(other, 1.0, decision, 0.5)
    with pytest.raises(ValueError, match="inside the shared prefix"):
        pack_shared_prefix(Seq(traj.token_ids[:8], [0] * 8), 1.0, traj, 1.0)
