"""The GRPO objective of the paper's joint optimisation (arXiv 2602.03647; docs/method.md#joint-grpo):
group-relative advantages, the clipped surrogate with a k3 KL term, and one policy update over a batch
of sampled sequences.

A training sequence is anything with ``token_ids`` and ``loss_mask`` (a rollout
:class:`~searchr2.rollout.Trajectory`, or a refiner :class:`~searchr2.refiner.Decision`, whose mask
marks only the integer it emitted). ``loss_mask`` is 1 exactly on the tokens the model generated, so
the prompt, the retrieved documents and the meta prompt are never trained on (Search-R1's
retrieved-token masking; docs/method.md#loss-mask).

The algorithm, in the order the functions below implement it:

1. Advantages (:func:`group_advantages`). Each question has ``group_size`` sampled trajectories with
   rewards R_1..R_G; Â_i = (R_i − mean) / (std + eps), with the sample (unbiased, n − 1) standard
   deviation of the group, as ``torch.std`` in verl's GRPO. A group whose rewards are all equal
   carries no signal and gets Â = 0 for all its members. A refiner decision sequence carries the
   advantage of the final trajectory it led to (the caller copies it over).
2. Log-probabilities (:func:`sequence_logprobs`). One forward pass of the decoder body; the output
   head runs only at the positions that predict a generated token (as :class:`~searchr2.sft.MaskedLMLoss`
   does), so the full ``(batch, length, vocab)`` logits are never built. The result is aligned with
   the tokens: entry ``[b, t]`` is log π(token t | tokens < t) where ``loss_mask[b, t]`` is 1, else 0.
3. The loss (:func:`grpo_loss`), per generated token t of sequence i, with r_t = π_θ / π_old:

       ℓ_t = −min(r_t·Â_i, clip(r_t, 1 − ε, 1 + ε)·Â_i) + β·k3_t,
       k3_t = exp(ref_t − logp_t) − (ref_t − logp_t) − 1          (an unbiased, non-negative estimate
                                                                   of KL(π_θ ‖ π_ref))

   averaged over the sequence's generated tokens (L_i), then over sequences with per-sequence weights
   w_i: loss = Σ w_i·L_i / Σ w_i. With groups of equal size the mean over sequences is the mean of
   the group means ("per sequence then per group"). The refiner's decision sequences get weight
   ``refiner_weight``; weight 0 gives them exactly zero gradient and leaves the Actor's loss what it
   would be without them (the weighted mean divides by Σ w, not by the number of sequences, so the
   "+Meta-Refiner" rung trains the Actor at the same scale as the Search-R1 rung). No entropy bonus.
   A sequence may instead carry its own per-token coefficients (``token_weights``): that is how two
   sequences sharing a prefix train in one pass (:func:`pack_shared_prefix`).
4. The update (:func:`ppo_update`): ``ppo_epochs`` passes over the batch, each ONE optimizer step
   (the paper's mini-batch equals its rollout batch), accumulated over micro-batches of at most
   ``micro_batch_tokens`` padded tokens, with gradient clipping, through Hugging Face Accelerate so it
   runs unchanged under ``accelerate launch`` (DDP). The old policy's log-probabilities are those of
   the model before the update: unless given, they are read off the first epoch's own forward pass
   (no optimizer step has happened yet then), which saves a forward pass per step. A loss that is
   NaN, infinite or beyond ``loss_limit`` stops the run before the weights are touched
   (:func:`check_finite`).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from searchr2.distributed import zero_stage
from searchr2.params import check_types
from searchr2.training import IGNORE, Record, body_attention_mask, check_optimizer_knobs, collate, plan_micro_batches

#: log-ratios (logp − old, ref − logp) are clamped to ±this before exponentiating, so a policy that
#: drifted far cannot overflow exp() (verl uses the same bound)
LOG_RATIO_CLAMP = 20.0
#: the per-token k3 KL estimate is capped at this (as verl's low_var_kl); a token beyond it has no KL gradient
KL_CLAMP = 10.0


@dataclass(frozen=True)
class GRPOConfig:
    """How the policy is optimised: the GRPO part of the ``rl`` params section (joint Actor-Refiner GRPO,
    arXiv 2602.03647; ``docs/method.md``, "Joint GRPO")."""

    group_size: int = 5               # trajectories sampled per question; advantages are relative to the group
                                      # (paper: G = 5)
    clip_eps: float = 0.2             # PPO clip range: the ratio pi/pi_old is clipped to [1-eps, 1+eps] (verl default)
    kl_coef: float = 0.001            # beta of the k3 KL(pi || pi_ref) loss term to the frozen starting model
                                      # (paper: 0.001); 0 skips KL and the reference pass
    ppo_epochs: int = 1               # passes over each rollout batch, one optimizer step each (paper: 1)
    lr: float = 1e-5                  # peak AdamW learning rate (paper: 1e-6; 10x here for a 4-step CPU run)
    warmup_ratio: float = 0.0         # share of all optimizer steps spent warming the learning rate up, then
                                      # constant (paper: 0.285)
    weight_decay: float = 0.0         # AdamW weight decay on matrices (not on norms and biases), as in sft
    micro_batch_tokens: int = 4096    # padded tokens (rows x longest row) per forward/backward; sequences of similar
                                      # length share a micro-batch; a longer sequence gets one of its own
    max_grad_norm: float = 1.0        # clip the global gradient norm to this before each optimizer step
    adv_eps: float = 1e-6             # added to the group's std before dividing (a group of equal rewards gets 0)
    refiner_weight: float = 1.0       # weight of each refiner decision sequence against an Actor sequence (weight 1);
                                      # 0: the refiner acts in rollouts but is not trained (the "+Meta-Refiner" rung)
    freeze_layers: int = 10           # bottom decoder layers kept frozen, plus the input embeddings when > 0 (as sft)
    loss_limit: float = 100.0         # stop the run (a clear error naming the step) when |loss| exceeds this;
                                      # NaN/inf always stop it; 0 disables the bound
    seed: int = 0                     # seeds the micro-batch grouping (and, in the rl stage, question draws,
                                      # sampling and cut points)
    skip_zero_advantage: bool = True  # sequences whose advantage is exactly 0 (their group's rewards were all equal)
                                      # are not forwarded: they carry no policy gradient, only their beta-weighted
                                      # KL term, which is dropped (the loss keeps dividing by the whole batch's
                                      # weight). false: the paper's objective to the letter, at full cost
                                      # (docs/deviations.md, "Skip zero advantage")

    def __post_init__(self):
        check_types(self, "rl config: ")

        def need(cond: bool, what: str):
            if not cond:
                raise ValueError(f"rl config: {what}")

        need(self.group_size >= 2, f"group_size must be >= 2 (a group of one has no relative advantage), "
                                   f"got {self.group_size}")
        for name in ("ppo_epochs", "micro_batch_tokens"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(0 < self.clip_eps < 1, f"clip_eps must be in (0, 1), got {self.clip_eps}")
        need(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")
        check_optimizer_knobs(self, need)
        need(self.adv_eps > 0, f"adv_eps must be > 0, got {self.adv_eps}")
        need(self.refiner_weight >= 0, f"refiner_weight must be >= 0, got {self.refiner_weight}")
        need(self.loss_limit >= 0, f"loss_limit must be >= 0 (0 disables it), got {self.loss_limit}")


class TrainSequence(Protocol):
    """What a training sequence must offer (Trajectory and refiner Decision both do)."""

    token_ids: list[int]
    loss_mask: list[int]


@dataclass
class PackedSequence:
    """Two training sequences, one a prefix of the other, as one row (see :func:`pack_shared_prefix`)."""

    token_ids: list[int]
    loss_mask: list[int]
    token_weights: list[float]      # per token: its segment's weight / its segment's number of marked tokens
    weight: float                   # the two segments' weights summed: what this row adds to the step's normalizer


def pack_shared_prefix(first: TrainSequence, first_weight: float, second: TrainSequence,
                       second_weight: float) -> PackedSequence:
    """One row that trains ``first`` (weight ``first_weight``) and ``second`` (``second_weight``) at once.

    ``second`` must begin with all of ``first``'s tokens and mark nothing among them (e.g. a refiner
    decision whose meta prompt is the trajectory itself, then the review request). In a causal LM the
    log-probabilities at the shared positions do not depend on what follows, so one forward pass over
    ``second``'s tokens gives both sequences' log-probabilities; with per-token coefficients
    ``w / n`` (each segment's weight over its number of marked tokens) the loss, its gradient and the
    step's normalizer are those of the two sequences trained apart, at the cost of one.
    """
    n = len(first.token_ids)
    if list(second.token_ids[:n]) != list(first.token_ids):
        raise ValueError("cannot pack: the second sequence does not begin with the first one's tokens")
    if any(second.loss_mask[:n]):
        raise ValueError("cannot pack: the second sequence marks tokens inside the shared prefix")
    if first_weight < 0 or second_weight < 0:
        raise ValueError("weights must be >= 0")
    n1, n2 = sum(first.loss_mask), sum(second.loss_mask)
    if not n1 or not n2:
        raise ValueError("cannot pack: a sequence without marked tokens has nothing to train")
    mask = list(first.loss_mask) + list(second.loss_mask[n:])
    coef = [first_weight * m / n1 for m in first.loss_mask] + [second_weight * m / n2 for m in second.loss_mask[n:]]
    return PackedSequence(token_ids=list(second.token_ids), loss_mask=mask, token_weights=coef,
                          weight=first_weight + second_weight)


def token_coefficients(sequence: TrainSequence, weight: float) -> torch.Tensor:
    """Each token's coefficient in the loss: ``weight``·mask / (marked tokens) (the per-sequence mean), or
    the sequence's own ``token_weights`` (a :class:`PackedSequence`); all 0 when ``weight`` is 0."""
    mask = torch.tensor(sequence.loss_mask, dtype=torch.float32)
    if weight == 0:
        return torch.zeros_like(mask)
    own = getattr(sequence, "token_weights", None)
    if own is not None:
        if len(own) != len(mask):
            raise ValueError(f"token_weights has {len(own)} entries but the sequence has {len(mask)} tokens")
        return torch.tensor(own, dtype=torch.float32) * mask
    return weight * mask / mask.sum().clamp(min=1)


class DivergenceError(FloatingPointError):
    """The RL loss became NaN, infinite or too large: the run is stopped instead of training on garbage."""


# ---------------------------------------------------------------------------------------- advantages

def group_advantages(rewards: Sequence[float], group_size: int, eps: float = 1e-6) -> list[float]:
    """Group-relative advantages Â_i = (R_i − mean_group) / (std_group + eps).

    ``rewards`` lie group after group, ``group_size`` consecutive entries per question. ``std_group`` is
    the sample standard deviation (divides by n − 1, as ``torch.std`` in verl's GRPO). A group whose
    rewards are all equal gets exactly 0 for every member.
    """
    if not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2, got {group_size!r}")
    if len(rewards) % group_size:
        raise ValueError(f"got {len(rewards)} rewards, not a multiple of group_size={group_size}")
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        group = [float(r) for r in rewards[start:start + group_size]]
        if not all(map(math.isfinite, group)):
            raise ValueError(f"non-finite reward in group {start // group_size}: {group}")
        if max(group) == min(group):
            out += [0.0] * group_size
            continue
        mean = sum(group) / group_size
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (group_size - 1))
        out += [(r - mean) / (std + eps) for r in group]
    return out


# ------------------------------------------------------------------------------------ log-probabilities

def sequence_logprobs(lm: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      loss_mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities of the generated tokens of a right-padded batch, shape ``(batch, length)``.

    Entry ``[b, t]`` is log π(input_ids[b, t] | input_ids[b, :t]) where ``loss_mask[b, t]`` is 1 and 0
    elsewhere (float32, differentiable). Position 0 has nothing before it and must not be marked. The
    decoder body runs on the whole batch, causally and without the padding mask
    (:func:`searchr2.training.body_attention_mask`); the output head and the softmax only on the hidden
    states that predict a marked token. Like MaskedLMLoss, this assumes plain logits (no softcapping or
    scaling), true of the Llama and Qwen2 families used here.
    """
    loss_mask = loss_mask.bool()
    if loss_mask[:, 0].any():
        raise ValueError("loss_mask marks position 0: the first token has no context to be scored from")
    hidden = lm.base_model(input_ids=input_ids, attention_mask=body_attention_mask(lm, attention_mask),
                           use_cache=False).last_hidden_state
    keep = loss_mask[:, 1:]                                  # hidden state at t-1 predicts token t
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    picked = -F.cross_entropy(logits, input_ids[:, 1:][keep], reduction="none")
    shifted = torch.zeros(keep.shape, dtype=picked.dtype, device=picked.device).masked_scatter(keep, picked)
    return F.pad(shifted, (1, 0))                            # back to token positions: column 0 is never scored


class TokenLogProbs(torch.nn.Module):
    """A causal LM whose forward is :func:`sequence_logprobs`.

    This is the module to hand to ``accelerator.prepare`` for training, so that DDP wraps the forward
    that is actually called. It keeps the LM as ``.lm`` (like :class:`searchr2.sft.MaskedLMLoss`), so
    :func:`searchr2.training.freeze_bottom` applies to it as it is.
    """

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        return sequence_logprobs(self.lm, input_ids, attention_mask, loss_mask)


def collate_sequences(sequences: Sequence[TrainSequence], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and token-aligned ``loss_mask`` (all int64).

    Built on :func:`searchr2.training.collate`; its shifted labels are turned back into a mask aligned with
    the tokens. Every sequence is checked: mask as long as the ids, values 0/1, nothing marked at
    position 0, at least one marked token.
    """
    records = []
    for i, s in enumerate(sequences):
        ids, mask = list(s.token_ids), list(s.loss_mask)
        if len(ids) != len(mask):
            raise ValueError(f"sequence {i}: loss_mask has {len(mask)} entries but token_ids has {len(ids)}")
        if any(m not in (0, 1) for m in mask):
            raise ValueError(f"sequence {i}: loss_mask values must be 0 or 1")
        if mask[0] == 1:
            raise ValueError(f"sequence {i}: loss_mask marks position 0, which no token predicts")
        if 1 not in mask:
            raise ValueError(f"sequence {i}: loss_mask has no 1, so the sequence has nothing to train")
        records.append(Record(str(i), "", torch.tensor(ids, dtype=torch.int32), torch.tensor(mask, dtype=torch.bool)))
    batch = collate(records, pad_id)
    learnt = batch.pop("labels") != IGNORE                   # [b, t]: token t+1 is learnt
    batch.pop("loss_weights")                                # GRPO weighs tokens by advantage instead
    batch["loss_mask"] = F.pad(learnt[:, :-1], (1, 0)).long()
    return batch


def _unwrap_lm(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)                  # DDP / DeepSpeed wrappers keep the module here
    return model.lm if isinstance(model, TokenLogProbs) else model


@torch.no_grad()
def compute_logprobs(model: torch.nn.Module, sequences: Sequence[TrainSequence],
                     micro_batch_tokens: int) -> list[torch.Tensor]:
    """Log-probabilities of the generated tokens of every sequence, without gradient (e.g. the reference model).

    ``model`` is a Hugging Face causal LM or a (prepared) :class:`TokenLogProbs`. Returns one float32 CPU
    tensor per sequence, as long as its ``token_ids``, 0 where ``loss_mask`` is 0. Sequences are grouped
    into micro-batches of at most ``micro_batch_tokens`` padded tokens.
    """
    lm = _unwrap_lm(model)
    device = next(lm.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(sequences)
    for group in plan_micro_batches([len(s.token_ids) for s in sequences], micro_batch_tokens, seed=0):
        batch = {k: v.to(device) for k, v in collate_sequences([sequences[i] for i in group]).items()}
        logp = sequence_logprobs(lm, **batch).float().cpu()
        for row, i in enumerate(group):
            out[i] = logp[row, :len(sequences[i].token_ids)].clone()
    return out


# ------------------------------------------------------------------------------------------------ loss

def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): exp(d) − d − 1 with d = ref − logp (clamped to ±20).

    Non-negative, 0 exactly where ``logp == ref_logp``, and with zero gradient there; capped at
    :data:`KL_CLAMP`.
    """
    d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1).clamp(max=KL_CLAMP)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float = 0.2, kl_coef: float = 0.001, weights: torch.Tensor | None = None,
              normalizer: float | None = None,
              coefficients: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of a batch of sequences and its statistics (see the module docstring, step 3).

    ``logp``, ``old_logp``, ``ref_logp`` and ``mask`` are ``(batch, length)``, token-aligned (as
    :func:`sequence_logprobs` returns them); ``mask`` marks the generated tokens. ``advantages`` and
    ``weights`` (default all 1) are per sequence. KL is left out of the loss when ``ref_logp`` is None
    or ``kl_coef`` is 0. The loss is Σ w_i·L_i / ``normalizer``; the normalizer defaults to Σ w_i (a
    weighted mean), and :func:`ppo_update` passes the weight sum of the whole step, so that the losses
    of its micro-batches add up to the step's loss. A sequence without marked tokens has L_i = 0.

    Statistics (floats): ``loss``; ``pg_loss`` and ``kl_loss`` (its two parts, β included);
    ``clip_frac``, the share of tokens where the clipped term is the larger loss, i.e. clipping took
    the token's gradient away; ``ratio`` and ``kl``, token means of r_t and of k3 (``kl`` is computed
    when ``ref_logp`` is given, even with β = 0, and is 0.0 without it); ``adv_abs``, mean |Â| over
    sequences; ``tokens`` and ``sequences``, what the means are over.
    """
    mask = mask.to(logp.dtype)
    advantages = advantages.to(logp.dtype)
    weights = torch.ones_like(advantages) if weights is None else weights.to(logp.dtype)
    if not (logp.shape == old_logp.shape == mask.shape) or (ref_logp is not None and ref_logp.shape != logp.shape):
        raise ValueError(f"shape mismatch: logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)}, mask "
                         f"{tuple(mask.shape)}, ref_logp {None if ref_logp is None else tuple(ref_logp.shape)}")
    if advantages.shape != logp.shape[:1] or weights.shape != logp.shape[:1]:
        raise ValueError(f"advantages {tuple(advantages.shape)} and weights {tuple(weights.shape)} must have one "
                         f"entry per sequence ({logp.shape[0]})")

    # clipped surrogate, per token
    ratio = torch.exp((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    adv = advantages[:, None]
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    pg = torch.maximum(unclipped, clipped)               # = -min(r*A, clip(r)*A)

    # KL to the reference policy, per token
    kl = kl_k3(logp, ref_logp) if ref_logp is not None else None
    use_kl = kl is not None and kl_coef > 0
    per_token = pg + kl_coef * kl if use_kl else pg

    # mean over each sequence's generated tokens, then weighted over sequences: one coefficient per token
    if coefficients is None:
        coefficients = weights[:, None] * mask / mask.sum(dim=1, keepdim=True).clamp(min=1)
    elif coefficients.shape != mask.shape:
        raise ValueError(f"coefficients {tuple(coefficients.shape)} must match the mask {tuple(mask.shape)}")
    coefficients = coefficients.to(logp.dtype) * mask

    def weighted(x: torch.Tensor) -> torch.Tensor:
        return (coefficients * x).sum()

    if normalizer is None:
        normalizer = float(weights.sum())
    normalizer = normalizer if normalizer > 0 else 1.0   # all weights 0: the numerator is exactly 0 too
    loss = weighted(per_token) / normalizer

    with torch.no_grad():
        tokens = float(mask.sum())

        def token_mean(x: torch.Tensor) -> float:
            return float((x * mask).sum()) / tokens if tokens else 0.0

        stats = {
            "loss": float(loss),
            "pg_loss": float(weighted(pg)) / normalizer,
            "kl_loss": float(weighted(kl_coef * kl)) / normalizer if use_kl else 0.0,
            "clip_frac": token_mean((clipped > unclipped).to(mask.dtype)),
            "ratio": token_mean(ratio),
            "kl": token_mean(kl) if kl is not None else 0.0,
            "adv_abs": float(advantages.abs().mean()) if len(advantages) else 0.0,
            "tokens": tokens,
            "sequences": float(len(advantages)),
        }
    return loss, stats


def check_finite(loss: float | torch.Tensor, step: int | str, limit: float = 0.0) -> None:
    """Raise :class:`DivergenceError` (a FloatingPointError) naming ``step`` when ``loss`` is NaN or
    infinite, or when ``limit`` > 0 and |loss| exceeds it."""
    value = float(loss)
    if not math.isfinite(value):
        raise DivergenceError(f"rl step {step}: the loss is {value}; the policy has diverged (try a lower rl.lr "
                              "or rl.max_grad_norm, or resume from an earlier checkpoint)")
    if limit > 0 and abs(value) > limit:
        raise DivergenceError(f"rl step {step}: |loss| = {abs(value):.4g} exceeds rl.loss_limit={limit:g}; the "
                              "policy is diverging (try a lower rl.lr, or resume from an earlier checkpoint)")


# ---------------------------------------------------------------------------------------------- update

def _pad(rows: list[torch.Tensor], width: int, device) -> torch.Tensor:
    """Per-sequence 1-D tensors right-padded with 0 into ``(len(rows), width)`` float32."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for r, row in enumerate(rows):
        out[r, :len(row)] = row
    return out.to(device)


#: statistics averaged over tokens, over sequences, and summed (loss parts are already normalised per step)
_TOKEN_STATS = ("clip_frac", "ratio", "kl")
_SEQUENCE_STATS = ("adv_abs",)
_SUMMED_STATS = ("loss", "pg_loss", "kl_loss")


def ppo_update(accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               sequences: Sequence[TrainSequence], advantages: Sequence[float],
               old_logp: Sequence[torch.Tensor] | None, ref_logp: Sequence[torch.Tensor] | None, cfg: GRPOConfig,
               weights: Sequence[float] | None = None, *, lrs: Sequence[float] | None = None, step: int = 0,
               total_weight: float | None = None, allow_idle: bool = False) -> dict[str, float]:
    """Update the policy on one rollout batch: ``cfg.ppo_epochs`` optimizer steps (module docstring, step 4).

    ``model`` is a :class:`TokenLogProbs` prepared by ``accelerator`` together with ``optimizer``.
    ``lrs``, when given, holds the learning rate of each of the ``ppo_epochs`` optimizer steps; it is set on
    every parameter group before that step's first forward pass (DeepSpeed steps inside the last
    backward); None leaves the optimizer's rate as it is. ``sequences`` are this process's
    share; ``advantages`` and ``weights`` (default 1) are per sequence (a :class:`PackedSequence`'s weight is
    its ``weight``, its tokens weigh as its ``token_weights`` say); ``old_logp`` and ``ref_logp``
    per sequence as :func:`compute_logprobs` returns them. ``old_logp`` None takes π_old from the first
    epoch's forward pass (the policy that sampled, as long as no step was taken since the rollouts);
    ``ref_logp`` None (or ``cfg.kl_coef`` 0) leaves KL out. Sequences of weight 0 are not forwarded at
    all (their gradient would be exactly 0). Each step's loss is the weighted mean over the sequences of
    all processes, checked by :func:`check_finite` (with ``step``, for the message) before the weights
    change. ``total_weight`` is this process's weight sum of the whole batch when the caller left
    sequences out (:func:`select_for_update`); it defaults to the sum of ``weights``. The caller
    sets the model's mode (``train()``). ``allow_idle``: a process whose sequences all have weight 0
    still joins the step (see the code) instead of raising. Returns the statistics of :func:`grpo_loss`
    over all epochs, plus ``grad_norm`` (mean over epochs; NaN under DeepSpeed, which clips internally),
    ``lr`` (that of the first step) and ``epochs``.
    """
    n = len(sequences)
    if lrs is not None and len(lrs) != cfg.ppo_epochs:
        raise ValueError(f"lrs has {len(lrs)} learning rates for {cfg.ppo_epochs} ppo_epochs")
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    for name, values in (("advantages", advantages), ("weights", weights), ("old_logp", old_logp),
                         ("ref_logp", ref_logp)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} sequences")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0")
    active = [i for i in range(n) if weights[i] > 0]
    if not active:
        # every process must take part in each gradient all-reduce, so an empty share cannot just be skipped:
        # with allow_idle it forwards its first sequence at weight 0 (an exactly zero gradient)
        if not allow_idle or not n:
            raise ValueError("no sequence with weight > 0 on this process: nothing to train on")
        active = [0]
    if cfg.kl_coef == 0:
        ref_logp = None

    device = accelerator.device
    plan = [[active[j] for j in group]
            for group in plan_micro_batches([len(sequences[i].token_ids) for i in active], cfg.micro_batch_tokens,
                                            cfg.seed)]
    batches = [collate_sequences([sequences[i] for i in group]) for group in plan]
    coefs = [_pad([token_coefficients(sequences[i], weights[i]) for i in group], batch["input_ids"].shape[1], "cpu")
             for group, batch in zip(plan, batches)]
    # the step's loss divides by the weight sum of all processes; DDP averages gradients over processes,
    # so each process scales its backward by the process count to undo that
    own = sum(weights) if total_weight is None else float(total_weight)
    if own < sum(weights) - 1e-9:
        raise ValueError(f"total_weight {own} is less than the weight of the sequences given ({sum(weights)})")
    normalizer = float(accelerator.reduce(torch.tensor([own], dtype=torch.float64, device=device),
                                          reduction="sum").item())
    scale = accelerator.num_processes
    first_old: list[torch.Tensor] = []                     # π_old per micro-batch, when read off the first epoch
    real = len(plan)
    if accelerator.num_processes > 1 and zero_stage(accelerator) >= 2:
        # ZeRO-2 reduce-scatters the gradients of every backward pass, ZeRO-3 also gathers each layer's
        # weights in every forward, all processes together: so all must run as many micro-batches, and
        # the shorter shares repeat their last one at loss 0
        most = int(accelerator.gather(torch.tensor([real], device=device)).max().item())
        plan += [plan[-1]] * (most - real)
        batches += [batches[-1]] * (most - real)

    totals = dict.fromkeys((*_TOKEN_STATS, *_SEQUENCE_STATS, *_SUMMED_STATS, "tokens", "sequences"), 0.0)

    def where(epoch: int):
        return step if cfg.ppo_epochs == 1 else f"{step} (epoch {epoch + 1} of {cfg.ppo_epochs})"

    grad_norms, lr = [], None
    for epoch in range(cfg.ppo_epochs):
        if lrs is not None:
            for param_group in optimizer.param_groups:
                param_group["lr"] = float(lrs[epoch])
        if lr is None:
            lr = optimizer.param_groups[0]["lr"]
        epoch_loss = 0.0
        for b, (group, batch) in enumerate(zip(plan, batches)):
            batch = {k: v.to(device) for k, v in batch.items()}
            width = batch["input_ids"].shape[1]
            last = b == len(plan) - 1
            accelerator.sync_gradients = last             # DDP all-reduces only at the step boundary
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                logp = model(**batch)
                if b >= real:                             # a ZeRO lockstep repeat: no gradient, no statistics
                    loss, stats = logp.sum() * 0.0, None
                else:
                    if old_logp is not None:
                        old = _pad([old_logp[i] for i in group], width, device)
                    elif epoch == 0:                      # no step taken yet: the current policy is π_old
                        old = logp.detach()
                        first_old.append(old)
                    else:
                        old = first_old[b]
                    ref = _pad([ref_logp[i] for i in group], width, device) if ref_logp is not None else None
                    loss, stats = grpo_loss(logp, old, ref,
                                            torch.tensor([advantages[i] for i in group], device=device),
                                            batch["loss_mask"], cfg.clip_eps, cfg.kl_coef,
                                            torch.tensor([weights[i] for i in group], device=device), normalizer,
                                            coefs[b].to(device))
                    epoch_loss += stats["loss"]
                if last:
                    # the step's loss over all processes decides whether the weights may change; checked
                    # before the last backward, because DeepSpeed takes its optimizer step inside it
                    _check_step_loss(accelerator, epoch_loss, where(epoch), cfg.loss_limit, optimizer)
                accelerator.backward(loss * scale)
            if stats is not None:
                _accumulate(totals, stats)

        try:
            norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            grad_norm = float("nan") if norm is None else float(norm)    # DeepSpeed clips inside and returns None
            if norm is not None and not math.isfinite(grad_norm):
                raise DivergenceError(f"rl step {where(epoch)}: the gradient norm is {grad_norm}; "
                                      "the policy has diverged")
        except DivergenceError:
            optimizer.zero_grad(set_to_none=True)         # leave no poisoned gradient behind
            raise
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        grad_norms.append(grad_norm)
    return _summarise(accelerator, totals, grad_norms, lr, cfg.ppo_epochs)


def _check_step_loss(accelerator, own_loss: float, where, limit: float, optimizer) -> None:
    """:func:`check_finite` on the step's loss summed over all processes (every process calls this once
    per optimizer step); on failure the gradients accumulated so far are dropped before raising."""
    total = float(accelerator.reduce(torch.tensor([own_loss], dtype=torch.float64, device=accelerator.device),
                                     reduction="sum").item())
    try:
        check_finite(total, where, limit)
    except DivergenceError:
        optimizer.zero_grad(set_to_none=True)
        raise


def select_for_update(advantages: Sequence[float], weights: Sequence[float], cfg: GRPOConfig) -> list[int]:
    """Indices of the sequences the update forwards: weight > 0 and, with ``cfg.skip_zero_advantage``,
    advantage != 0 (a sequence with advantage 0 contributes only its KL term to the loss)."""
    return [i for i, (a, w) in enumerate(zip(advantages, weights))
            if w > 0 and (a != 0 or not cfg.skip_zero_advantage)]


def _accumulate(totals: dict[str, float], stats: dict[str, float]) -> None:
    """Add one micro-batch's statistics as sums (means weighted back by what they are means over)."""
    for k in _TOKEN_STATS:
        totals[k] += stats[k] * stats["tokens"]
    for k in _SEQUENCE_STATS:
        totals[k] += stats[k] * stats["sequences"]
    for k in (*_SUMMED_STATS, "tokens", "sequences"):
        totals[k] += stats[k]


def _summarise(accelerator, totals: dict[str, float], grad_norms: list[float], lr: float,
               epochs: int) -> dict[str, float]:
    """Sum the statistics over processes and turn them into the means :func:`ppo_update` returns."""
    keys = list(totals)
    summed = accelerator.reduce(torch.tensor([totals[k] for k in keys], dtype=torch.float64,
                                             device=accelerator.device), reduction="sum").tolist()
    total = dict(zip(keys, summed))
    out = {k: total[k] / total["tokens"] if total["tokens"] else 0.0 for k in _TOKEN_STATS}
    out.update({k: total[k] / total["sequences"] if total["sequences"] else 0.0 for k in _SEQUENCE_STATS})
    out.update({k: total[k] / epochs for k in _SUMMED_STATS})             # mean step loss over the epochs
    out.update(tokens=total["tokens"] / epochs, sequences=total["sequences"] / epochs,
               grad_norm=sum(grad_norms) / len(grad_norms), lr=lr, epochs=float(epochs))
    return out
