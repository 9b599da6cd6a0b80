"""Supervised warm-up fine-tuning on token-id records with a loss mask (the ``sft`` stage).

The input is what the rollout engine and the warm-up teachers write: one JSON object per line with
``token_ids`` and a ``loss_mask`` that is 1 exactly on the tokens the model should learn to write
(its own turns) and 0 on the prompt, the retrieved documents and every other environment text. The
ids are trained on as they are: nothing is decoded and tokenised again, so the mask stays aligned.

The algorithm, in the order :func:`train_sft` runs it:

1. :func:`load_sft_data` reads and checks every record before any model is loaded (a bad record is
   a located :class:`~searchr2.io.InputError`); records longer than ``max_seq_len`` are skipped and
   counted.
2. Records are grouped by length into micro-batches of at most ``micro_batch_tokens`` padded tokens
   (:func:`searchr2.training.plan_micro_batches`); every epoch visits the micro-batches in a new seeded order, and
   ``grad_accum`` consecutive micro-batches make one optimizer step.
3. The loss of a step is the weighted mean cross-entropy over all loss tokens of the step, on all
   processes: a long record weighs as many tokens as it has, not as one example. Each input file can
   mark the Meta-Refiner's decision tokens (``decisions``), which weigh ``sft.refiner_loss_weight``: a
   meta prompt trains one token (the step number) against hundreds in an Actor trajectory, so
   unweighted the refiner would get a fraction of a percent of the gradient. The output head runs only at
   the positions that carry loss (:class:`MaskedLMLoss`), which on CPU is about a quarter faster than
   full-vocabulary logits at every position and needs far less memory.
4. AdamW with linear warm-up then linear decay, gradient clipping (:mod:`searchr2.training`, shared
   with the RL trainer), all through Hugging Face Accelerate, so the same loop runs on one CPU here and on several GPUs under ``accelerate launch``
   (DDP, or DeepSpeed ZeRO-3 with the configs in ``configs/accelerate/``).
5. Every ``save_every_steps`` optimizer steps and at the end of every epoch the full training state
   (weights, optimizer, scheduler, random states) is saved as the only checkpoint, atomically
   (:func:`searchr2.training.save_checkpoint`). A
   rerun with the same fingerprint (params, input files, base model) resumes from it; a checkpoint
   with another fingerprint is discarded. Killed runs lose at most the steps since the last one.
6. The fine-tuned model is written as a plain Hugging Face directory, atomically, with the base
   model's tokenizer and a provenance file; the checkpoint is then removed.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from searchr2.io import InputError, atomic_dir, read_jsonl, require_field, sha256_file
from searchr2.distributed import (MIXED_PRECISION, lm_state_dict, load_trainable_lm, make_accelerator,
                                  resolve_precision, zero_stage)
from searchr2.models import PROVENANCE_FILE, quiet_deepspeed_cpu_notice
from searchr2.params import check_types
from searchr2.training import (IGNORE, Record, body_attention_mask, check_freeze_layers, check_optimizer_knobs, collate,
                               fingerprint, freeze_bottom, make_optimizer, open_live, plan_micro_batches,
                               remove_checkpoints, resume, save_checkpoint, warmup_schedule)

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class SFTConfig:
    """How the warm-up fine-tune runs (the ``sft`` params section), with Accelerate; the loss counts only
    tokens whose loss_mask is 1 (the model's own turns). Token counts are in tokens of the base model's
    tokenizer."""

    lr: float = 1e-4                  # peak AdamW learning rate (reached after linear warm-up, then linear decay to 0)
    epochs: int = 1                   # passes over all records of both input files (data/sft/actor.jsonl and
                                      # refiner.jsonl, mixed and shuffled)
    micro_batch_tokens: int = 2048    # padded tokens (rows x longest row) per forward/backward; records of
                                      # similar length share a micro-batch, so little of it is padding
    grad_accum: int = 2               # micro-batches per optimizer step (per process); the loss of a step is
                                      # the mean over all its loss tokens
    warmup_ratio: float = 0.1         # share of all optimizer steps spent warming the learning rate up from 0
    weight_decay: float = 0.0         # AdamW weight decay, on matrices only (not on norms and biases)
    max_grad_norm: float = 1.0        # clip the global gradient norm to this before each optimizer step
    seed: int = 0                     # seeds the record order and every random state; same seed + inputs give
                                      # the same weights on CPU (resumed or not)
    freeze_layers: int = 10           # bottom decoder layers kept frozen, plus the input embeddings when > 0
                                      # (with tied embeddings the output head is frozen with them); saves the
                                      # backward pass below the first trained layer (10 of SmolLM2-135M's 30:
                                      # twice the tokens/s on 2 CPU cores)
    max_seq_len: int = 2048           # records with more tokens are skipped (counted in results/sft.json, with a
                                      # warning)
    save_every_steps: int = 10        # optimizer steps between checkpoints in data/checkpoints/sft (one is also
                                      # saved after each epoch)
    device: str = "cpu"               # cpu | cuda | auto (cuda when available); under `accelerate launch` each
                                      # process takes its own GPU
    mixed_precision: str = "auto"     # fp32 | bf16 | fp16 | auto: autocast for the forward pass; weights and
                                      # optimizer state stay float32. auto: bf16 where the device multiplies
                                      # bfloat16 natively (a CPU with AMX or AVX512-BF16: about 2.5x faster
                                      # forward+backward here; a CUDA GPU with bf16), else fp32
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory, ~30% slower)
    refiner_loss_weight: float = 15.0  # weight of each refiner decision token (a record's ``decisions``)
                                      # relative to an Actor token: a meta prompt trains one answer token against
                                      # ~100 per Actor trajectory. At 15 the refiner-study warm-up's answers
                                      # carried about half its loss; at 100 they carried 87% and the Actor lost
                                      # 5.4 EM points (docs/measurements.md, "The refiner-study profile").
                                      # Part of the fingerprint: a changed weight never resumes an old checkpoint
    refiner_passes: int = 4           # times each record of the refiner file (data/sft/refiner.jsonl) is trained per
                                      # epoch, shuffled in with the Actor's: the refiner learns to discriminate from
                                      # repeated passes over the same examples, not from one (docs/measurements.md,
                                      # "Meta-Refiner warm-up"); the Actor file is seen once

    def __post_init__(self):
        check_types(self, "sft config: ")

        def need(cond: bool, what: str):
            if not cond:
                raise ValueError(f"sft config: {what}")

        for name in ("epochs", "micro_batch_tokens", "grad_accum", "save_every_steps", "refiner_passes"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check_optimizer_knobs(self, need)
        need(self.refiner_loss_weight > 0, f"refiner_loss_weight must be > 0, got {self.refiner_loss_weight}")
        need(self.max_seq_len >= 2, f"max_seq_len must be >= 2 (one token to read, one to predict), "
                                    f"got {self.max_seq_len}")
        need(self.micro_batch_tokens >= self.max_seq_len,
             f"micro_batch_tokens ({self.micro_batch_tokens}) must be >= max_seq_len ({self.max_seq_len}), "
             "so that every record fits in a micro-batch")
        need(self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}")
        need(self.mixed_precision in MIXED_PRECISION,
             f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")


# --------------------------------------------------------------------------------------------- data

@dataclass
class SFTData:
    """The checked training records of all input files, and what was left out."""

    records: list[Record]
    skipped: int                      # records longer than max_seq_len
    files: dict[str, str]             # input path -> sha256 of its bytes

    def counts(self) -> dict[str, int]:
        """Records trained per epoch per input file name (a record listed twice, ``passes``, counts twice)."""
        out = {Path(p).name: 0 for p in self.files}
        for r in self.records:
            out[r.source] += 1
        return out


def _int_list(record: dict, field: str, path: Path, line: int) -> list[int]:
    values = require_field(record, field, list, path, line)
    for i, v in enumerate(values):
        if type(v) is not int:      # bool is an int subclass; JSON true must not pass as 1
            raise InputError(path, f"expected a list of ints; item {i} is {v!r}", line=line, field=field)
    return values


def check_record(record: dict, path: Path, line: int, vocab_size: int) -> tuple[list[int], list[int], list[int]]:
    """Return ``(token_ids, loss_mask, decisions)`` of a raw record, or raise an InputError naming path, line
    and field. ``decisions`` (optional in the record, [] when absent) lists the positions of the tokens that
    are the Meta-Refiner's decisions; each must be a learnt token."""
    require_field(record, "id", str, path, line)
    ids = _int_list(record, "token_ids", path, line)
    mask = _int_list(record, "loss_mask", path, line)
    if len(mask) != len(ids):
        raise InputError(path, f"has {len(mask)} entries but token_ids has {len(ids)}", line=line, field="loss_mask")
    low, high = min(ids), max(ids)
    if low < 0 or high >= vocab_size:
        pos = next(i for i, t in enumerate(ids) if not 0 <= t < vocab_size)
        raise InputError(path, f"token id {ids[pos]} at position {pos} is outside the tokenizer's vocabulary "
                               f"(0..{vocab_size - 1})", line=line, field="token_ids")
    if any(m not in (0, 1) for m in mask):
        pos = next(i for i, m in enumerate(mask) if m not in (0, 1))
        raise InputError(path, f"values must be 0 or 1; position {pos} is {mask[pos]}", line=line, field="loss_mask")
    if mask[0] == 1:
        raise InputError(path, "the first token cannot carry loss (no token before it predicts it)",
                         line=line, field="loss_mask")
    if 1 not in mask:
        raise InputError(path, "has no 1: the record has no token to learn", line=line, field="loss_mask")
    decisions = _int_list(record, "decisions", path, line) if "decisions" in record else []
    for pos in decisions:
        if not 0 <= pos < len(ids) or not mask[pos]:
            raise InputError(path, f"position {pos} is not a learnt token of the record (loss_mask is not 1 there)",
                             line=line, field="decisions")
    return ids, mask, decisions


def load_sft_data(paths: Sequence[str | os.PathLike], vocab_size: int, max_seq_len: int,
                  decision_weight: float = 1.0, passes: dict[str | os.PathLike, int] | None = None) -> SFTData:
    """Read and check every record of every file; skip (and count) those longer than ``max_seq_len``.

    The tokens a record lists in ``decisions`` (the Meta-Refiner's answers, one per meta prompt, whether
    the prompt is a record of its own or rides at the end of an Actor trajectory) weigh
    ``decision_weight`` in the loss; every other learnt token weighs 1. A missing file, a malformed
    line, a bad record, or no record at all is an :class:`InputError`. ``passes`` maps a path (as given in
    ``paths``) to the number of times each of its records is listed, i.e. trained per epoch (default 1).
    """
    passes = {str(k): int(v) for k, v in (passes or {}).items()}
    unknown = set(passes) - {str(p) for p in paths}
    if unknown:
        raise ValueError(f"passes for files that are not read: {sorted(unknown)}")
    if any(v < 1 for v in passes.values()):
        raise ValueError(f"passes must be >= 1, got {passes}")
    records, skipped, files = [], 0, {}
    for path in map(Path, paths):
        files[str(path)] = sha256_file(path) if path.exists() else ""
        first = len(records)
        for line, raw in read_jsonl(path):          # raises "file not found" for a missing file
            ids, mask, decisions = check_record(raw, path, line, vocab_size)
            if len(ids) > max_seq_len:
                skipped += 1
                continue
            marks = None
            if decisions:
                marks = torch.zeros(len(ids), dtype=torch.bool)
                marks[decisions] = True
            records.append(Record(raw["id"], path.name, torch.tensor(ids, dtype=torch.int32),
                                  torch.tensor(mask, dtype=torch.bool), 1.0, marks, float(decision_weight)))
        records += records[first:] * (passes.get(str(path), 1) - 1)
    if not records:
        names = ", ".join(str(p) for p in paths)
        why = f"all {skipped} are longer than sft.max_seq_len={max_seq_len}" if skipped else "the files are empty"
        raise InputError(paths[0], f"no training records in {names}: {why}")
    if skipped:
        print(f"[sft] warning: skipped {skipped} record(s) longer than sft.max_seq_len={max_seq_len} tokens",
              file=sys.stderr)
    return SFTData(records, skipped, files)


class MicroBatches(torch.utils.data.Dataset):
    """The planned micro-batches as a dataset of ready tensors, in a seeded order per epoch.

    Item ``i`` is the ``i``-th micro-batch of the current epoch's order. The order depends only on the
    seed and the epoch, never on a random state, so a resumed run visits exactly the same batches.
    """

    def __init__(self, records: Sequence[Record], batches: list[list[int]], seed: int):
        self.records, self.batches, self.seed = records, batches, seed
        self.order = list(range(len(batches)))

    def set_epoch(self, epoch: int) -> None:
        self.order = list(range(len(self.batches)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(self.order)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return collate([self.records[j] for j in self.batches[self.order[i]]])


def _only_item(items: list):
    """DataLoader collate for a dataset whose items already are batches."""
    return items[0]


# --------------------------------------------------------------------------------------------- loss

class MaskedLMLoss(torch.nn.Module):
    """A causal LM whose forward returns the summed (weighted) cross-entropy over the positions with a label.

    The decoder body runs on the whole batch; the output embedding (the LM head) is applied only to the
    hidden states of positions that predict a learnt token. Dividing the sum by the number of labels
    gives exactly what ``lm(input_ids, labels=...)`` computes, without the full ``(batch, length,
    vocab)`` logits. Architectures that post-process logits (softcapping, logit scaling) are not
    covered; the Llama and Qwen2 families used here are plain.
    """

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                loss_weights: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.lm.base_model(input_ids=input_ids, attention_mask=body_attention_mask(self.lm, attention_mask),
                                    use_cache=False).last_hidden_state
        keep = labels != IGNORE
        logits = self.lm.get_output_embeddings()(hidden[keep]).float()
        if loss_weights is None:
            return F.cross_entropy(logits, labels[keep], reduction="sum")
        return (F.cross_entropy(logits, labels[keep], reduction="none") * loss_weights[keep].float()).sum()


def backward_step(accelerator, model: torch.nn.Module, micro_batches: list[dict]) -> dict[str, float]:
    """Forward and backward the micro-batches of one optimizer step; gradients end up in ``.grad``.

    Each micro-batch's summed (weighted) loss is divided by the total loss weight of the whole step on
    all processes (and multiplied by the process count, which DDP's gradient averaging divides out), so
    the accumulated gradient is that of the weighted mean loss over every loss token of the step (the
    plain mean when every weight is 1). Gradients are synchronised across processes on the last
    micro-batch only. Returns the step's global ``loss`` (weighted mean per loss token), ``loss_tokens``
    and ``tokens`` (all non-padding tokens forwarded).
    """
    def weight(b):
        return float(b["loss_weights"].double().sum()) if "loss_weights" in b else float((b["labels"] != IGNORE).sum())

    local = torch.tensor([sum(int((b["labels"] != IGNORE).sum()) for b in micro_batches),
                          sum(int(b["attention_mask"].sum()) for b in micro_batches),
                          sum(weight(b) for b in micro_batches)],
                         dtype=torch.float64, device=accelerator.device)
    loss_tokens, tokens, total_weight = accelerator.reduce(local, reduction="sum").tolist()
    scale = accelerator.num_processes / total_weight
    loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        accelerator.sync_gradients = last     # DDP all-reduces, DeepSpeed steps, only at the step boundary
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            summed = model(**batch)
            accelerator.backward(summed * scale)
        loss_sum += summed.detach().double()
    loss = accelerator.reduce(loss_sum, reduction="sum").item() / total_weight
    return {"loss": loss, "loss_tokens": int(loss_tokens), "tokens": int(tokens)}


# -------------------------------------------------------------------------------------------- model

def _base_dtype(base_dir: Path) -> torch.dtype:
    """The dtype the base model's weights were saved in (the fine-tuned model is saved the same way)."""
    config = json.loads((base_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, str(name).removeprefix("torch."), torch.float32)


def save_model(accelerator, model: torch.nn.Module, base_dir: Path, out_dir: Path, provenance: dict) -> None:
    """Write the trained LM as a complete Hugging Face directory (atomically), in the base model's dtype,
    with the base model's tokenizer and a provenance file."""
    from transformers import AutoTokenizer

    state = lm_state_dict(accelerator, model)        # every process takes part (ZeRO-3 gathers here)
    if accelerator.is_main_process:
        lm = accelerator.unwrap_model(model).lm
        dtype = _base_dtype(base_dir)
        weights = {k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in state.items()}
        with atomic_dir(out_dir) as tmp:
            lm.config.dtype = dtype
            lm.save_pretrained(tmp, state_dict=weights)
            AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
            (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    accelerator.wait_for_everyone()


# -------------------------------------------------------------------------------------------- train

def _log_step(live, bar, step: int, **metrics: float) -> None:
    """One optimizer step to dvclive (when logging) and to the progress bar."""
    if live is not None:
        live.step = step
        for name, value in metrics.items():
            live.log_metric(name, value)
        live.next_step()
    bar.update(1)
    bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")


def _rate(tokens: float, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if seconds else None


def train_sft(cfg: SFTConfig, data: SFTData, base_dir: str | os.PathLike, out_dir: str | os.PathLike,
              checkpoint_dir: str | os.PathLike, live_dir: str | os.PathLike | None = None) -> dict | None:
    """Fine-tune the model in ``base_dir`` on ``data`` and write it to ``out_dir``; see the module docstring.

    Resumes from ``checkpoint_dir`` when it holds a checkpoint of the same run; logs per-step curves with
    dvclive to ``live_dir`` (None: no dvclive). Returns the run's summary on the main process, None on
    the others.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    base_dir, out_dir, checkpoint_dir = Path(base_dir), Path(out_dir), Path(checkpoint_dir)
    quiet_deepspeed_cpu_notice()
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision, cfg.max_grad_norm, "sft")
    main = accelerator.is_main_process
    set_seed(cfg.seed)
    precision = resolve_precision(cfg.mixed_precision, cfg.device)
    # the resolved precision: a checkpoint of a bf16 run is not resumed as an fp32 one on another machine
    run_id = fingerprint(replace(cfg, mixed_precision=precision), data.files, base_dir, accelerator.num_processes)

    # model, data, optimizer and schedule, all prepared by Accelerate
    check_freeze_layers(cfg.freeze_layers, base_dir, "sft")
    lm = load_trainable_lm(accelerator, base_dir)
    freeze_bottom(lm, cfg.freeze_layers, "sft")
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.train()
    model = MaskedLMLoss(lm)
    trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    batches = MicroBatches(data.records, plan_micro_batches([len(r) for r in data.records], cfg.micro_batch_tokens,
                                                            cfg.seed), cfg.seed)
    loader = torch.utils.data.DataLoader(batches, batch_size=1, shuffle=False, collate_fn=_only_item)
    # each process gets every num_processes-th micro-batch (Accelerate repeats a few to even the shares)
    per_process = math.ceil(len(batches) / accelerator.num_processes)
    total_steps = math.ceil(per_process / cfg.grad_accum) * cfg.epochs
    optimizer = make_optimizer(lm, cfg.lr, cfg.weight_decay)
    scheduler = warmup_schedule(optimizer, round(cfg.warmup_ratio * total_steps), accelerator.num_processes,
                                total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    assert len(loader) == per_process, (len(loader), per_process)

    # resume from the checkpoint of this same run, if there is one
    progress, resumed = resume(accelerator, checkpoint_dir, run_id, stage="sft", fresh={
        "step": 0, "epoch": 0, "batches_done": 0, "tokens": 0, "loss_tokens": 0, "seconds": 0.0, "first_loss": None,
        "loss": None, "fingerprint": run_id})
    if resumed and main:
        print(f"[sft] resuming from step {progress['step']} (epoch {progress['epoch'] + 1}, "
              f"micro-batch {progress['batches_done']} of {len(loader)})", file=sys.stderr)
    resumed_from = progress["step"]
    if main:
        print(f"[sft] {len(data.records)} records {data.counts()}, {data.skipped} skipped, "
              f"{len(batches)} micro-batches, {total_steps} optimizer steps over {cfg.epochs} epoch(s), "
              f"{trainable:,} trainable parameters, {accelerator.num_processes} process(es) on {accelerator.device}",
              file=sys.stderr)

    live = open_live(live_dir, resumed_from) if main and live_dir is not None else None

    # the loop: one optimizer step per grad_accum micro-batches
    bar = tqdm(total=total_steps, initial=progress["step"], desc="sft", disable=not main, dynamic_ncols=True)
    run_tokens, run_seconds = 0, 0.0
    for epoch in range(progress["epoch"], cfg.epochs):
        done = progress["batches_done"] if epoch == progress["epoch"] else 0
        epoch_loader = accelerator.skip_first_batches(loader, done) if done else loader
        # Accelerate's loaders pass their epoch on to the dataset (MicroBatches.set_epoch) when iterated,
        # so the epoch must be set on the loader itself, also on a fresh one that skips ahead
        epoch_loader.set_epoch(epoch)
        stream = iter(epoch_loader)
        while group := list(islice(stream, cfg.grad_accum)):
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            stats = backward_step(accelerator, model, group)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - start

            done += len(group)
            run_tokens += stats["tokens"]
            run_seconds += seconds
            progress.update(step=progress["step"] + 1, epoch=epoch, batches_done=done, loss=stats["loss"],
                            tokens=progress["tokens"] + stats["tokens"], seconds=progress["seconds"] + seconds,
                            loss_tokens=progress["loss_tokens"] + stats["loss_tokens"])
            if progress["first_loss"] is None:
                progress["first_loss"] = stats["loss"]
            _log_step(live, bar, progress["step"], loss=stats["loss"], lr=lr, grad_norm=float(grad_norm),
                      tokens_per_s=stats["tokens"] / seconds)

            if done == len(loader):                       # end of the epoch: the next run starts the next one
                save_checkpoint(accelerator, checkpoint_dir, {**progress, "epoch": epoch + 1, "batches_done": 0})
            elif progress["step"] % cfg.save_every_steps == 0:
                save_checkpoint(accelerator, checkpoint_dir, progress)
    bar.close()

    summary = {
        "steps": progress["step"], "epochs": cfg.epochs, "records": len(data.records), "records_skipped": data.skipped,
        "records_by_file": data.counts(), "micro_batches_per_epoch": len(batches),
        "train_tokens": progress["tokens"], "loss_tokens": progress["loss_tokens"],
        "seconds": round(progress["seconds"], 2), "tokens_per_s": _rate(progress["tokens"], progress["seconds"]),
        "tokens_per_s_this_run": _rate(run_tokens, run_seconds),
        "first_loss": progress["first_loss"], "final_loss": progress["loss"], "resumed_from_step": resumed_from,
        "trainable_params": trainable, "processes": accelerator.num_processes,
        "zero_stage": zero_stage(accelerator), "mixed_precision": precision,
    }
    provenance = {"source": "sft", "base_model": str(base_dir), "base_provenance": _read_json(base_dir / PROVENANCE_FILE),
                  "sft": asdict(cfg), "data": data.files, "fingerprint": run_id,
                  "steps": progress["step"], "final_loss": progress["loss"]}
    save_model(accelerator, model, base_dir, out_dir, provenance)
    if main:
        remove_checkpoints(checkpoint_dir)
        if live is not None:
            for key in ("steps", "train_tokens", "loss_tokens", "tokens_per_s", "final_loss"):
                if summary[key] is not None:
                    live.summary[key] = summary[key]
            live.end()
    accelerator.wait_for_everyone()
    return summary if main else None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None
