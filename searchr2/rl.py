"""Joint Actor–Refiner GRPO (arXiv 2602.03647; docs/method.md#joint-grpo): the training loop of the ``rl`` stage.

One step, in the order :func:`train_rl` runs it:

1. **Rollout**: ``questions_per_step`` train questions (a seeded draw per step), each played
   ``group_size`` times by the Actor with sampling and live search (:func:`searchr2.rollout.rollout`).
2. **Refine** (``refiner.enabled``): the Meta-Refiner (same weights, meta prompt) accepts each
   trajectory or cuts it at a sampled step and the Actor regenerates the rest
   (:func:`searchr2.refiner.refine`); the refined trajectory replaces the original in its group.
3. **Judge**: R = EM · (1 + r_process) (:mod:`searchr2.reward`; the judge only sees correct ones).
4. **Update**: group-normalised advantages; the Actor's trajectories and the refiner's decision
   sequences (each carrying the advantage of the final trajectory it led to, weighted by
   ``refiner_weight``) go through the clipped GRPO objective with a k3 KL to the frozen starting
   model (:func:`searchr2.grpo.ppo_update`), on Accelerate. With the refiner's ``inline`` layout a
   decision about the final trajectory (an acceptance) rides in the trajectory's own row
   (:func:`searchr2.grpo.pack_shared_prefix`): the same objective, one forward pass instead of two.

Every ``val_every`` steps the Actor answers a held-out slice of the train split greedily; the model
with the best validation EM is kept (collapse guard; on a tie the later one) and becomes the stage's
output. Every
``save_every_steps`` steps the full training state is checkpointed; a rerun of the same run resumes
from it and, on CPU, ends with the same weights as an uninterrupted run: everything random in a
step is derived from (seed, step), never from state carried across steps.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from searchr2.grpo import (GRPOConfig, TokenLogProbs, compute_logprobs, group_advantages, pack_shared_prefix,
                           ppo_update, select_for_update)
from searchr2.io import atomic_dir, write_jsonl
from searchr2.metrics import exact_match
from searchr2.models import pick_device, quiet_deepspeed_cpu_notice, resolve_dtype
from searchr2.packing import pack_linears, repack
from searchr2.refiner import RefinerConfig, refine, review_hook
from searchr2.reward import RewardConfig, reward_stats, score
from searchr2.rollout import RolloutConfig, rollout
from searchr2.distributed import (MIXED_PRECISION, frozen_copy, full_weights, lm_state_dict, load_trainable_lm,
                                  make_accelerator, precision_dtype, resolve_precision, zero_stage)
from searchr2.training import (fingerprint, freeze_bottom, make_optimizer, open_live, remove_checkpoints, resume,
                               save_checkpoint, warmup_factor)


GENERATE_DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass(frozen=True)
class RLConfig(GRPOConfig):
    """The ``rl`` params section: the GRPO objective (inherited, see :class:`GRPOConfig`) and the run."""

    steps: int = 4                    # RL steps (one rollout batch and ppo_epochs optimizer steps each; 4 keeps
                                      # the whole default dvc repro under 45 min on 2 CPU cores; paper: 300)
    questions_per_step: int = 10      # train questions per step; each is played group_size times (paper: 512).
                                      # 10 x 5 x 4 steps = 200 trajectories: enough that the refiner revises
                                      # ~30 and the run can show what revising does (docs/measurements.md)
    val_questions: int = 20           # held-out train questions answered greedily for validation EM
    val_every: int = 2                # steps between validations (also after the last step; the best-validated
                                      # model is the output); 0: only at the end
    save_every_steps: int = 2         # steps between checkpoints in data/checkpoints/rl
    device: str = "cpu"               # cpu | cuda | auto
    mixed_precision: str = "auto"     # fp32 | bf16 | fp16 | auto: autocast in the update (weights and optimizer
                                      # state stay float32); the frozen reference model is loaded in the same
                                      # precision. auto: bf16 where the device multiplies bfloat16 natively
                                      # (CPU with AMX or AVX512-BF16, CUDA with bf16), else fp32
    generate_dtype: str = "auto"      # float32 | bfloat16 | float16 | auto: dtype of the policy copy that generates
                                      # (rollouts, refiner, validation), refreshed from the trained weights
                                      # before each use; float32 generates with the policy itself. auto:
                                      # bfloat16 where the device multiplies it natively, else float32
    lora_rank: int = 0                # 0: full fine-tuning (the paper); r > 0: LoRA adapters of rank r (peft) on
                                      # every linear layer of the decoder (needs freeze_layers 0), merged into
                                      # the output model data/models/rl
    lora_alpha: float = 16.0          # LoRA scaling numerator (the update is scaled by alpha / rank)

    def __post_init__(self):
        super().__post_init__()
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be an int >= 0, got {self.lora_rank!r}")
        if self.lora_rank and self.freeze_layers:
            raise ValueError("lora_rank > 0 trains adapters only; set freeze_layers to 0 (it would freeze nothing "
                             "more)")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        for name in ("steps", "questions_per_step", "val_questions", "save_every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.val_every < 0:
            raise ValueError(f"val_every must be an int >= 0, got {self.val_every!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.generate_dtype not in GENERATE_DTYPES:
            raise ValueError(f"generate_dtype must be one of {GENERATE_DTYPES}, got {self.generate_dtype!r}")


def split_questions(records: list[dict], cfg: RLConfig) -> tuple[list[dict], list[dict]]:
    """(train pool, validation slice): a seeded shuffle; the last ``val_questions`` are held out."""
    shuffled = list(records)
    random.Random(f"{cfg.seed}:split").shuffle(shuffled)
    if len(shuffled) <= cfg.val_questions:
        raise ValueError(f"rl.val_questions={cfg.val_questions} leaves no train question out of {len(shuffled)}")
    return shuffled[:-cfg.val_questions], shuffled[-cfg.val_questions:]


def step_questions(pool: list[dict], cfg: RLConfig, step: int) -> list[dict]:
    """The questions of one step, drawn from (seed, step) alone so a resumed run draws the same."""
    return random.Random(f"{cfg.seed}:questions:{step}").sample(pool, min(cfg.questions_per_step, len(pool)))


def validation_hits(lm, tokenizer, retriever, records: list[dict], rollout_cfg: RolloutConfig) -> list[int]:
    """Greedy Actor-only exact match (0/1) per record (what evaluation measures)."""
    if not records:
        return []
    trajs = rollout(lm, tokenizer, retriever, [r["question"] for r in records],
                    dataclasses.replace(rollout_cfg, do_sample=False))
    return [exact_match(t.answer, r["golden_answers"]) for t, r in zip(trajs, records)]


def validate(lm, tokenizer, retriever, records: list[dict], rollout_cfg: RolloutConfig) -> float:
    """Greedy Actor-only EM ×100 on ``records``."""
    return round(100 * sum(validation_hits(lm, tokenizer, retriever, records, rollout_cfg)) / len(records), 2)


def shard(items: list, accelerator) -> list:
    """This process's share of ``items`` (every ``num_processes``-th one): data parallelism over questions."""
    return items[accelerator.process_index::accelerator.num_processes]


def mean_over_processes(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes that logged it (the identity on one process)."""
    if accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    every = gather_object([metrics])
    names = sorted({k for m in every for k in m})
    return {k: sum(m[k] for m in every if k in m) / sum(k in m for m in every) for k in names}


#: the fields of a :func:`revision_record`, in the order results/rl/revisions.jsonl writes them
REVISION_FIELDS = ("step", "id", "question", "golden_answers", "cuts", "turns_before", "turns_after",
                   "searches_before", "searches_after", "answer_before", "answer_after", "reward_before",
                   "reward_after", "group_em")


def revision_record(step: int, record: dict, cuts: list[int], before, after, reward_before: float,
                    reward_after: float, group_em: float) -> dict:
    """One revised trajectory of an RL run, as ``results/rl/revisions.jsonl`` lists it: where the refiner cut
    (``cuts``: the step it cut before, one per revision round), what the trajectory searched and answered
    before and after, its reward before and after (the pairs of :func:`revision_effect`), and ``group_em``,
    the share of its question's group (final trajectories) that answered right: how answerable the
    question was for the Actor at that step."""
    return dict(zip(REVISION_FIELDS, (
        step, record.get("id"), record["question"], list(record.get("golden_answers") or []), list(cuts),
        before.turns, after.turns, list(before.searches), list(after.searches), before.answer, after.answer,
        float(reward_before), float(reward_after), round(float(group_em), 4))))


def revision_effect(revisions: list, seed: int, samples: int = 2000) -> dict:
    """What the refiner's revisions did over a run: the mean reward of the revised trajectories before and
    after revising, and the paired difference with its 95% bootstrap interval over the revisions
    (``ci95`` None below 2 revisions). ``revisions``: :func:`revision_record` dicts, or
    ``[reward before, reward after]`` pairs."""
    from searchr2.stats import paired_difference

    pairs = [[r["reward_before"], r["reward_after"]] if isinstance(r, dict) else r for r in revisions]
    if not pairs:
        return {"n": 0, "before": None, "after": None, "diff": None, "ci95": None, "better": 0, "worse": 0}
    before, after = [p[0] for p in pairs], [p[1] for p in pairs]
    n = len(pairs)
    out = {"n": n, "before": round(sum(before) / n, 4), "after": round(sum(after) / n, 4),
           "diff": round((sum(after) - sum(before)) / n, 4), "ci95": None,
           "better": sum(a > b for b, a in pairs), "worse": sum(a < b for b, a in pairs)}
    if n >= 2:
        paired = paired_difference({"run": after}, {"run": before}, samples, seed)
        out["ci95"] = [round(c / 100, 4) for c in paired["ci95"]]
    return out


def rl_step(lm, tokenizer, retriever, records: list[dict], cfg: RLConfig, rollout_cfg: RolloutConfig,
            refiner_cfg: RefinerConfig, reward_cfg: RewardConfig, judge, step: int, rank: int = 0,
            on_phase: Callable[[str], object] | None = None, revisions: list | None = None, generate=None,
            reviews: list | None = None):
    """Steps 1–3 of the module docstring for one batch; returns (sequences, advantages, weights, metrics).

    ``rank`` (the process index) enters the sampling seeds, so that processes of a data-parallel run
    sample independently; rank 0 samples as a single-process run does. ``on_phase(name)`` is called as
    each phase ("rollout", "refine", "judge") begins (the stage's progress bar shows it). ``revisions``,
    when given, gets one :func:`revision_record` per trajectory the refiner revised (the run's paired
    comparison of what revising did, :func:`revision_effect`). ``reviews``, when given, gets one dict per
    reviewed trajectory: the refiner's first-review P(0) (``p_accept``), whether it revised, and the reward
    before and after (``benchmarks/bench_revision.py`` reads from it what another ``refiner.margin`` would
    do). ``generate`` (default ``lm``): what writes the turns, the model or a back-end of
    :mod:`searchr2.engine`; ``lm`` scores the refiner.
    """
    phase = on_phase or (lambda name: None)
    timings, metrics = {}, {}
    phase("rollout")
    group = [r for r in records for _ in range(cfg.group_size)]
    t0 = time.perf_counter()
    sample_cfg = dataclasses.replace(rollout_cfg, do_sample=True,
                                     seed=(cfg.seed * 100_003 + step + 7_919 * rank) % 2 ** 31)
    review = review_hook(tokenizer, refiner_cfg) if refiner_cfg.enabled and refiner_cfg.max_revisions else None
    spent: dict[str, float] = {}
    trajs = rollout(generate or lm, tokenizer, retriever, [r["question"] for r in group], sample_cfg, review=review,
                    timings=spent)
    timings["rollout"] = time.perf_counter() - t0 - spent.get("review", 0.0)   # reviews count as refining

    decisions = []
    if refiner_cfg.enabled:
        phase("refine")
        t0 = time.perf_counter()
        originals = trajs
        trajs, decisions = refine(lm, tokenizer, retriever, trajs, sample_cfg, refiner_cfg,
                                  random.Random(f"{cfg.seed}:refine:{step}" + (f":{rank}" if rank else "")), generate)
        timings["refine"] = time.perf_counter() - t0 + spent.get("review", 0.0)
        revised = sorted({d.index for d in decisions if d.action > 0})
        first = [d for d in decisions if d.round == 0]
        metrics["acceptance_rate"] = sum(d.action == 0 for d in first) / max(len(first), 1)
        metrics["revisions_per_traj"] = sum(d.action > 0 for d in decisions) / len(trajs)
    phase("judge")
    t0 = time.perf_counter()
    rows = score(group, trajs, reward_cfg, judge)
    timings["judge"] = time.perf_counter() - t0
    rewards = [r["reward"] for r in rows]
    if decisions and revised:
        before = score([group[i] for i in revised], [originals[i] for i in revised], reward_cfg, judge)
        metrics["revised_reward_before"] = sum(r["reward"] for r in before) / len(revised)
        metrics["revised_reward_after"] = sum(rewards[i] for i in revised) / len(revised)
        if revisions is not None:
            size = cfg.group_size
            group_em = [sum(r["outcome"] for r in rows[k:k + size]) / size for k in range(0, len(rows), size)]
            revisions.extend(revision_record(step, group[i], [d.action for d in decisions if d.index == i and d.action],
                                             originals[i], trajs[i], b["reward"], rewards[i], group_em[i // size])
                             for b, i in zip(before, revised))
    if decisions and reviews is not None:
        reward_before = dict(zip(revised, (b["reward"] for b in before))) if revised else {}
        reviews.extend({"step": step, "id": group[d.index].get("id"), "p_accept": round(d.probs[0], 6),
                        "revised": d.index in reward_before,
                        "reward_before": float(reward_before.get(d.index, rewards[d.index])),
                        "reward_after": float(rewards[d.index])} for d in decisions if d.round == 0)

    advantages = group_advantages(rewards, cfg.group_size, cfg.adv_eps)
    sequences, seq_adv, weights = training_sequences(trajs, advantages, decisions, cfg.refiner_weight)
    summary = reward_stats(rows)
    metrics.update(reward=summary["reward"], em=summary["em"], searches=summary["searches"],
                   useful_share=summary["useful_share"] if summary["useful_share"] is not None else 0.0,
                   response_tokens=sum(sum(t.loss_mask) for t in trajs) / len(trajs),
                   reward_std=float(torch.tensor(rewards).std()) if len(rewards) > 1 else 0.0)
    return sequences, seq_adv, weights, metrics, timings


def training_sequences(trajs: list, advantages: list[float], decisions: list, refiner_weight: float):
    """The update's rows: every final trajectory (weight 1) and, when ``refiner_weight`` > 0, every
    refiner decision, which carries the advantage of the trajectory it ended in (docs/method.md#joint-grpo).

    A decision whose meta prompt begins with its final trajectory's tokens (the ``inline`` layout's
    acceptances) is packed into that trajectory's row (:func:`searchr2.grpo.pack_shared_prefix`);
    the others (decisions about a trajectory that was then cut, or ``numbered`` meta prompts) are rows
    of their own. Returns (sequences, advantages, weights).
    """
    sequences, seq_adv, weights = list(trajs), list(advantages), [1.0] * len(trajs)
    if refiner_weight <= 0:
        return sequences, seq_adv, weights
    for d in decisions:
        final = trajs[d.index]
        n = len(final.token_ids)
        if sequences[d.index] is final and d.token_ids[:n] == final.token_ids and not any(d.loss_mask[:n]):
            sequences[d.index] = pack_shared_prefix(final, 1.0, d, refiner_weight)
            weights[d.index] = sequences[d.index].weight
        else:
            sequences.append(d)
            seq_adv.append(advantages[d.index])
            weights.append(refiner_weight)
    return sequences, seq_adv, weights


def with_lora(lm: torch.nn.Module, cfg: RLConfig):
    """Wrap ``lm`` with trainable LoRA adapters (peft) on every linear layer but the output head."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(lm, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                         target_modules="all-linear", bias="none"))


def export_model(policy: torch.nn.Module, peft_model, out_dir, state: dict | None = None) -> None:
    """Save the policy as a plain Hugging Face model directory; LoRA adapters are merged into a copy.

    ``state``: the policy's whole state dict (:func:`searchr2.distributed.lm_state_dict`), the weights to
    save when they are not all on this process (ZeRO-3); None saves ``policy``'s own."""
    if peft_model is None:
        policy.save_pretrained(out_dir, state_dict=state)
        return
    import copy

    copy.deepcopy(peft_model).merge_and_unload().save_pretrained(out_dir)


def step_learning_rates(cfg: RLConfig, step: int) -> list[float]:
    """The learning rate of each of the ``ppo_epochs`` optimizer steps of RL step ``step`` (1-based).

    The schedule (linear warm-up over ``warmup_ratio`` of all ``steps x ppo_epochs`` optimizer steps, then
    constant; :func:`searchr2.training.warmup_factor`) is a function of the step number: a step that
    takes no optimizer step (:func:`update_policy`) still uses up its places in it, and a resumed run
    needs no saved scheduler state."""
    warmup = round(cfg.warmup_ratio * cfg.steps * cfg.ppo_epochs)
    return [cfg.lr * warmup_factor((step - 1) * cfg.ppo_epochs + epoch, warmup) for epoch in range(cfg.ppo_epochs)]


def update_policy(accelerator, model, reference, optimizer, lrs: list[float] | None, sequences: list,
                  advantages: list[float], weights: list[float], cfg: RLConfig, step: int) -> dict[str, float]:
    """Step 4 of the module docstring: the reference pass and :func:`searchr2.grpo.ppo_update` over the
    sequences :func:`searchr2.grpo.select_for_update` keeps, at the learning rates ``lrs``
    (:func:`step_learning_rates`; None keeps the optimizer's). With ``skip_zero_advantage``, a step
    whose groups all had equal rewards takes no optimizer step, and its rates are simply not used.
    Returns ppo_update's statistics plus ``trained_share``, the share of sequences forwarded."""
    keep = select_for_update(advantages, weights, cfg)
    share = len(keep) / max(len(sequences), 1)
    kept_anywhere = len(keep)
    if accelerator.num_processes > 1:                 # every process must agree on whether a step is taken
        kept_anywhere = int(accelerator.reduce(torch.tensor([len(keep)], device=accelerator.device),
                                               reduction="sum").item())
    if not kept_anywhere:
        return {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0,
                "lr": lrs[0] if lrs is not None else optimizer.param_groups[0]["lr"], "trained_share": 0.0}
    idle = not keep                                   # others train: join their all-reduce with a zero gradient
    if idle:
        keep = [min(range(len(sequences)), key=lambda i: len(sequences[i].token_ids))]
    chosen = [sequences[i] for i in keep]
    ref_logp = compute_logprobs(reference, chosen, cfg.micro_batch_tokens) if reference is not None else None
    model.train()
    stats = ppo_update(accelerator, model, optimizer, chosen, [advantages[i] for i in keep], None, ref_logp, cfg,
                       [0.0] if idle else [weights[i] for i in keep], lrs=lrs, step=step,
                       total_weight=sum(weights), allow_idle=idle)
    return {**stats, "trained_share": share}


class Generator:
    """The weights that generate rollouts, refinements and validation answers (``rl.generate_dtype``).

    In float32 they are the policy itself. In a lower precision they are a copy of the policy in that
    dtype, refreshed from the trained weights each time :meth:`weights` is called (an inference engine's
    weight sync): on a CPU with AMX, bfloat16 generation is about twice as fast
    (docs/measurements.md#mixed-precision-training), and the update still trains float32 weights.
    Only the parameters that train are copied again; the frozen ones cannot have changed. On a CPU the
    copy's linear weights are packed (:mod:`searchr2.packing`); those that train are repacked after each refresh.
    """

    def __init__(self, policy: torch.nn.Module, dtype: str, zero3: bool = False, engine=None):
        self.policy, self.dtype, self.zero3, self.engine = policy, getattr(torch, dtype), zero3, engine
        self.copy, self.pairs = None, []

    @torch.no_grad()
    def generating(self, refreshed: torch.nn.Module | None = None):
        """What writes turns now: with a vLLM engine (``rollout.engine: vllm``), the engine with the policy's
        current weights loaded (every parameter: vLLM reprocesses a layer from what it is given); else the
        model :meth:`weights` returns, or ``refreshed`` when the caller has just called it. Call it where the
        policy's weights are whole (``full_weights``)."""
        if self.engine is None:
            return refreshed if refreshed is not None else self.weights()
        self.engine.load_weights(self.policy.named_parameters())
        return self.engine

    @torch.no_grad()
    def weights(self) -> torch.nn.Module:
        """The model to generate with now; call it where the policy's weights are whole (``full_weights``)."""
        if self.dtype == torch.float32:
            return self.policy
        if self.copy is None:
            if self.zero3:          # DeepSpeed's partitioned parameters must not be deep-copied: rebuild instead
                from transformers import AutoModelForCausalLM

                self.copy = AutoModelForCausalLM.from_config(self.policy.config, torch_dtype=self.dtype)
                self.copy.load_state_dict(self.policy.state_dict())
                self.copy.to(next(self.policy.parameters()).device)
            else:
                import copy

                self.copy = copy.deepcopy(self.policy).to(self.dtype)
            self.copy.eval().requires_grad_(False)
            self.pairs = [(mine, theirs) for mine, theirs in zip(self.copy.parameters(), self.policy.parameters())
                          if theirs.requires_grad]
            pack_linears(self.copy)
        else:
            for mine, theirs in self.pairs:
                mine.copy_(theirs)
            repack(self.copy, [mine for mine, _ in self.pairs])     # the frozen layers' packing still holds
        return self.copy


def _run_fingerprint(cfg: RLConfig, sections: dict, data_files: dict, base_dir: Path, processes: int) -> str:
    extra = {f"params:{k}": hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()
             for k, v in sections.items()}
    return fingerprint(cfg, {**data_files, **extra}, base_dir, processes)


def train_rl(cfg: RLConfig, rollout_cfg: RolloutConfig, refiner_cfg: RefinerConfig, reward_cfg: RewardConfig,
             records: list[dict], tokenizer, retriever, judge, base_dir: Path, out_dir: Path, checkpoint_dir: Path,
             best_dir: Path, live_dir: Path | None, data_files: dict) -> dict:
    """Run (or resume) the RL training of the model in ``base_dir``; write the best-validated model to ``out_dir``."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    quiet_deepspeed_cpu_notice()
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision, cfg.max_grad_norm, "rl")
    if cfg.lora_rank and zero_stage(accelerator) == 3:
        raise ValueError("rl.lora_rank > 0 is not supported under DeepSpeed ZeRO-3 (the adapters are merged on "
                         "one process); use DDP or ZeRO-2, or lora_rank 0")
    set_seed(cfg.seed)
    pool, val = split_questions(records, cfg)
    # what auto became on this machine: a checkpoint is only resumed by a run that computes the same way
    cfg = dataclasses.replace(cfg, mixed_precision=resolve_precision(cfg.mixed_precision, cfg.device),
                              generate_dtype=resolve_dtype(cfg.generate_dtype, pick_device(cfg.device)))
    run_id = _run_fingerprint(cfg, {"rollout": asdict(rollout_cfg), "refiner": asdict(refiner_cfg),
                                    "reward": asdict(reward_cfg)}, data_files, base_dir, accelerator.num_processes)

    lm = load_trainable_lm(accelerator, base_dir)
    freeze_bottom(lm, cfg.freeze_layers, "rl")
    peft_model = with_lora(lm, cfg) if cfg.lora_rank else None
    if peft_model is not None:
        lm = peft_model.get_base_model()     # the same modules, LoRA layers injected: generate and train as usual
    reference = None
    if cfg.kl_coef > 0:
        reference = frozen_copy(accelerator, base_dir, precision_dtype(cfg.mixed_precision))
    model = TokenLogProbs(lm)
    # the learning rate is set at every step from the step number (step_learning_rates): no scheduler object
    model, optimizer = accelerator.prepare(model, make_optimizer(lm, cfg.lr, cfg.weight_decay))
    policy = accelerator.unwrap_model(model).lm
    engine = None
    if rollout_cfg.engine == "vllm":
        if peft_model is not None:
            raise ValueError("rl.lora_rank > 0 is not supported with rollout.engine vllm (the adapters would have to "
                             "be merged into vLLM's weights at every sync); use lora_rank 0 or rollout.engine hf")
        from searchr2.engine import open_engine

        engine = open_engine(base_dir, rollout_cfg, cfg.generate_dtype, cfg.device)
    generator = Generator(policy, cfg.generate_dtype, zero3=zero_stage(accelerator) == 3, engine=engine)
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.questions_per_step < world:
        raise ValueError(f"rl.questions_per_step={cfg.questions_per_step} leaves a process without questions: "
                         f"{world} processes need at least {world}")

    progress, resumed = resume(accelerator, checkpoint_dir, run_id, stage="rl", fresh={
        "step": 0, "fingerprint": run_id, "best_val_em": None, "best_step": None, "val": [], "seconds": 0.0,
        "revisions": []})
    if resumed and main:
        print(f"[rl] resuming from step {progress['step']}", file=sys.stderr)
    elif best_dir.exists() and main:
        shutil.rmtree(best_dir)              # a best model of an older run
    accelerator.wait_for_everyone()
    resumed_from = progress["step"]

    live = open_live(live_dir, resumed_from) if live_dir is not None and main else None
    # one tick per step (~1.5 min on 2 CPU cores); the description names the phase running meanwhile
    bar = tqdm(total=cfg.steps, initial=resumed_from, desc="rl", dynamic_ncols=True, disable=not main)

    def phase(step: int, name: str) -> None:
        bar.set_description_str(f"rl step {step}: {name}")

    def validate_and_keep(step: int) -> None:
        phase(step, "validation")
        with full_weights(accelerator, model):
            hits = validation_hits(generator.generating(), tokenizer, retriever, shard(val, accelerator), rollout_cfg)
        if world > 1:
            from accelerate.utils import gather_object

            hits = gather_object(hits)
        em = round(100 * sum(hits) / len(val), 2)
        progress["val"].append({"step": step, "em": em})
        if progress["best_val_em"] is None or em >= progress["best_val_em"]:   # ties: the more trained model
            progress.update(best_val_em=em, best_step=step)
            state = lm_state_dict(accelerator, model) if peft_model is None else None   # every process gathers
            if main:
                with atomic_dir(best_dir) as tmp:
                    export_model(policy, peft_model, tmp, state)
                    tokenizer.save_pretrained(tmp)
            accelerator.wait_for_everyone()
        if main:
            bar.write(f"[rl] step {step}: validation EM {em} (best {progress['best_val_em']} at step "
                      f"{progress['best_step']})", file=sys.stderr)
        if live is not None:
            live.log_metric("val_em", em)

    if resumed_from == 0:
        validate_and_keep(0)                 # the starting model is a candidate too
    for step in range(resumed_from + 1, cfg.steps + 1):
        start = time.perf_counter()
        batch = shard(step_questions(pool, cfg, step), accelerator)
        revised: list = []
        with full_weights(accelerator, model):           # generation needs whole weights (ZeRO-3)
            t0 = time.perf_counter()
            lm_now = generator.weights()
            generate = generator.generating(lm_now)
            synced = time.perf_counter() - t0
            sequences, advantages, weights, metrics, timings = rl_step(
                lm_now, tokenizer, retriever, batch, cfg, rollout_cfg, refiner_cfg, reward_cfg, judge, step, rank,
                on_phase=lambda name: phase(step, name), revisions=revised, generate=generate)
        if world > 1:
            from accelerate.utils import gather_object

            revised = gather_object(revised)
        progress.setdefault("revisions", []).extend(revised)
        timings["rollout"] += synced                    # refreshing the generating copy is part of rolling out
        phase(step, "update")
        t0 = time.perf_counter()
        if engine is not None:
            engine.sleep()                               # rollout.vllm.sleep_mode: its GPU memory to the update
        stats = update_policy(accelerator, model, reference, optimizer, step_learning_rates(cfg, step), sequences,
                              advantages, weights, cfg, step)
        metrics["trained_share"] = stats["trained_share"]
        timings["update"] = time.perf_counter() - t0
        metrics = mean_over_processes(accelerator, metrics)
        timings = mean_over_processes(accelerator, timings)
        seconds = time.perf_counter() - start
        progress.update(step=step, seconds=progress["seconds"] + seconds)
        if live is not None:
            live.step = step
            for name, value in {**metrics, **{k: stats[k] for k in ("loss", "kl", "clip_frac", "grad_norm", "lr")},
                                **{f"time_{k}": v for k, v in timings.items()}, "step_seconds": seconds}.items():
                live.log_metric(name, float(value))
        if (cfg.val_every and step % cfg.val_every == 0) or step == cfg.steps:
            validate_and_keep(step)
        if live is not None:
            live.next_step()
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward']:.2f}", em=f"{metrics['em']:.2f}", s=f"{seconds:.0f}")
        if step % cfg.save_every_steps == 0 or step == cfg.steps:
            phase(step, "checkpoint")
            save_checkpoint(accelerator, checkpoint_dir, progress)
    bar.set_description_str("rl")
    bar.close()
    if engine is not None:
        engine.close()

    if main:
        print(f"[rl] output: the model of step {progress['best_step']} (validation EM {progress['best_val_em']}; "
              f"history {progress['val']})", file=sys.stderr)
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(best_dir, tmp, dirs_exist_ok=True)
        remove_checkpoints(checkpoint_dir)   # done: a rerun (e.g. after a code change) trains afresh
        shutil.rmtree(best_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    summary = {"steps": progress["step"], "resumed_from_step": resumed_from, "seconds": round(progress["seconds"], 1),
               "seconds_per_step": round(progress["seconds"] / max(progress["step"], 1), 1),
               "best_step": progress["best_step"], "best_val_em": progress["best_val_em"], "val": progress["val"],
               "processes": world, "zero_stage": zero_stage(accelerator), "mixed_precision": cfg.mixed_precision,
               "generate_dtype": cfg.generate_dtype, "fingerprint": run_id,
               "revisions": revision_effect(progress.get("revisions", []), cfg.seed)}
    if live is not None:
        for key in ("best_step", "best_val_em"):
            live.summary[key] = summary[key]
        live.end()
        # in REVISION_FIELDS order: the records of a resumed run come back from the checkpoint key-sorted
        write_jsonl(live_dir / "revisions.jsonl", ({k: r[k] for k in REVISION_FIELDS}
                                                   for r in progress.get("revisions", []) if isinstance(r, dict)))
    return summary
