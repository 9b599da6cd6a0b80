"""What the two trainers share: the warm-up fine-tune (:mod:`searchr2.sft`) and joint GRPO
(:mod:`searchr2.rl` with :mod:`searchr2.grpo`).

- **Token-id records and micro-batches.** A training sequence is a list of token ids with a loss mask
  that is 1 exactly on the tokens the model wrote itself (:class:`Record`). Sequences of similar length
  are packed into micro-batches of a bounded number of padded tokens (:func:`plan_micro_batches`) and
  right-padded into tensors with shifted labels (:func:`collate`); the decoder runs them causally
  without a padding mask (:func:`body_attention_mask`).
- **Optimizer, schedule and frozen layers.** AdamW with weight decay on matrices only
  (:func:`make_optimizer`), a linear warm-up then linear decay (SFT, a scheduler: :func:`warmup_schedule`)
  or then a constant rate (RL, set from the step number: :func:`warmup_factor`), and the bottom decoder
  layers optionally frozen (:func:`freeze_bottom`).
- **Checkpoints and resume.** The full training state (weights, optimizer, SFT's scheduler, random states,
  through Accelerate) is saved as the only checkpoint, atomically (:func:`save_checkpoint`); a rerun with
  the same :func:`fingerprint` (params, input files, starting model, process count) resumes from it
  (:func:`resume`), a checkpoint of another run is discarded (:func:`clean_checkpoints`).
- **dvclive curves** that a resumed run continues without repeating steps (:func:`open_live`).

Every message names the stage that is running (``stage``: "sft" or "rl") and the params section whose
knob is at fault.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from searchr2.io import InputError, atomic_file, sha256_file

#: label value of positions without loss (what torch's cross-entropy and HF models ignore)
IGNORE = -100
#: records are length-sorted within windows of this many (after a seeded shuffle) before packing
SORT_WINDOW = 256
PROGRESS_FILE = "progress.json"
_CHECKPOINT = re.compile(r"step-(\d+)")


# ------------------------------------------------------------------------------- records and batches

@dataclass(frozen=True)
class Record:
    """One training sequence; ``mask[t]`` is True when token ``t`` is learnt (predicted from ``t-1``)."""

    id: str
    source: str               # name of the file it came from
    ids: torch.Tensor         # int32 token ids
    mask: torch.Tensor        # bool, same length
    weight: float = 1.0       # loss weight of each of its loss tokens, except the refiner's decisions
    decisions: torch.Tensor | None = None   # bool, same length: True at the Meta-Refiner's decision tokens
    decision_weight: float = 1.0            # loss weight of each of those (sft.refiner_loss_weight)

    def __len__(self) -> int:
        return len(self.ids)


def plan_micro_batches(lengths: Sequence[int], max_tokens: int, seed: int) -> list[list[int]]:
    """Group record indices into micro-batches of at most ``max_tokens`` padded tokens.

    Records are shuffled (seeded), sorted by length within windows of :data:`SORT_WINDOW`, and packed
    greedily, longest first, so the rows of a micro-batch have similar lengths and padding stays small.
    The grouping is fixed for the whole run (so the number of steps is known up front); the SFT trainer
    only changes the order in which the micro-batches are visited each epoch
    (:class:`searchr2.sft.MicroBatches`).
    """
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), SORT_WINDOW):
        window = sorted(order[start:start + SORT_WINDOW], key=lambda i: -lengths[i])
        batch: list[int] = []
        for i in window:
            # sorted longest first: the first row of a batch sets its padded width
            if batch and (len(batch) + 1) * lengths[batch[0]] > max_tokens:
                batches.append(batch)
                batch = []
            batch.append(i)
        batches.append(batch)
    return batches


def collate(records: Sequence[Record], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, shifted ``labels`` (position t predicts token t+1)
    and ``loss_weights`` (where a label is learnt: the record's ``decision_weight`` at its refiner decisions,
    its ``weight`` elsewhere; 0 where nothing is learnt)."""
    width = max(len(r) for r in records)
    input_ids = torch.full((len(records), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(records), width), dtype=torch.long)
    labels = torch.full((len(records), width), IGNORE, dtype=torch.long)
    loss_weights = torch.zeros((len(records), width), dtype=torch.float32)
    for row, r in enumerate(records):
        n = len(r)
        input_ids[row, :n] = r.ids
        attention_mask[row, :n] = 1
        target = r.ids[1:].long()
        labels[row, :n - 1] = torch.where(r.mask[1:], target, torch.full_like(target, IGNORE))
        weights = torch.full((n - 1,), float(r.weight))
        if r.decisions is not None:
            weights = torch.where(r.decisions[1:], torch.tensor(float(r.decision_weight)), weights)
        loss_weights[row, :n - 1] = r.mask[1:].float() * weights
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "loss_weights": loss_weights}


#: attention implementations that build the causal mask themselves when given none (the mask then only
#: says where padding is); flash-attention kernels use a given mask to drop padding, so they keep it
_CAUSAL_WITHOUT_MASK = ("sdpa", "eager")


def body_attention_mask(lm: torch.nn.Module, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask to give the decoder body for a right-padded batch (:func:`collate`): None when
    the causal mask alone says the same.

    In a right-padded batch every real token comes before its row's padding, so causal attention never
    lets it see a pad, and positions count from 0 either way: the real tokens' hidden states are those
    of the masked forward pass (tested to the bit on SmolLM2 with SDPA). Without a mask, SDPA runs as a
    causal kernel that skips the key blocks above the diagonal; with one, torch's CPU flash kernel
    computes every block, so the training forward and backward cost more (measured in
    docs/measurements.md#causal-attention-in-training-issue-17). What the padded positions compute is never
    read (their labels and loss masks are 0). Any other mask (left padding, holes), and attention
    implementations outside ``sdpa``/``eager``, keep the mask.
    """
    right_padded = bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()) and bool(attention_mask[:, 0].all())
    implementation = getattr(getattr(lm, "config", None), "_attn_implementation", None)
    return None if right_padded and implementation in _CAUSAL_WITHOUT_MASK else attention_mask


# ------------------------------------------------------------------- optimizer, schedule, freezing

def check_optimizer_knobs(cfg: Any, need) -> None:
    """The range checks of the knobs this module reads, for the SFT and the RL config alike: ``lr``,
    ``warmup_ratio``, ``weight_decay``, ``max_grad_norm`` and ``freeze_layers``. ``need(condition, message)``
    raises the config's own error when the condition fails."""
    need(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}")
    need(0 <= cfg.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    need(cfg.max_grad_norm > 0, f"max_grad_norm must be > 0, got {cfg.max_grad_norm}")
    need(cfg.freeze_layers >= 0, f"freeze_layers must be >= 0, got {cfg.freeze_layers}")


def make_optimizer(lm: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; weight decay on matrices only (not on norms and biases)."""
    params = [p for p in lm.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, processes: int,
                    total_steps: int | None = None):
    """The learning rate rises linearly from 0 over the first ``warmup_steps`` optimizer steps, then decays
    linearly to 0 at ``total_steps`` (the SFT warm-up) or, with ``total_steps`` None, stays constant (the
    RL schedule, as in the paper's verl set-up; the rl stage computes it per step, :func:`warmup_factor`).

    A scheduler prepared by Accelerate advances once per process at every step, so it is sized for all
    ``processes`` of them.
    """
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    if total_steps is None:
        return get_constant_schedule_with_warmup(optimizer, warmup_steps * processes)
    return get_linear_schedule_with_warmup(optimizer, warmup_steps * processes, total_steps * processes)


def warmup_factor(position: int, warmup_steps: int, total_steps: int | None = None) -> float:
    """The learning-rate multiplier of :func:`warmup_schedule` (one process) at optimizer step ``position``
    (0 = the first step): ``position / warmup_steps`` during the warm-up, then 1 (``total_steps`` None) or a
    linear decay reaching 0 at ``total_steps``. The same arithmetic as the schedule's, so ``lr *
    warmup_factor(i, ...)`` is the rate the schedule gives the ``i``-th step, to the bit."""
    if position < warmup_steps:
        return float(position) / float(max(1, warmup_steps))
    if total_steps is None:
        return 1.0
    return max(0.0, float(total_steps - position) / float(max(1, total_steps - warmup_steps)))


def check_freeze_layers(n_frozen: int, base_dir: Path, section: str) -> None:
    """Fail before loading the model when ``<section>.freeze_layers`` would leave no decoder layer to train."""
    config = json.loads((base_dir / "config.json").read_text())
    n_layers = config.get("num_hidden_layers")
    if isinstance(n_layers, int) and n_frozen >= n_layers:
        raise InputError(base_dir / "config.json", f"{section}.freeze_layers={n_frozen} would freeze every layer: "
                                                   f"this model has {n_layers}", field="num_hidden_layers")


def freeze_bottom(lm: torch.nn.Module, n_layers: int, section: str) -> None:
    """Freeze the input embeddings and the first ``n_layers`` decoder layers (nothing when 0).
    ``section`` names the params section in errors (``sft`` or ``rl``)."""
    if n_layers == 0:
        return
    layers = getattr(lm.base_model, "layers", None)
    if layers is None:
        raise ValueError(f"{section}.freeze_layers: cannot find the decoder layers of {type(lm).__name__}")
    if n_layers >= len(layers):
        raise ValueError(f"{section}.freeze_layers={n_layers} would freeze every layer: the model has {len(layers)}")
    lm.get_input_embeddings().requires_grad_(False)
    for layer in layers[:n_layers]:
        layer.requires_grad_(False)


# ------------------------------------------------------------------------------------- checkpoints

def fingerprint(cfg: Any, data_files: dict[str, str], base_dir: str | os.PathLike, num_processes: int) -> str:
    """What a checkpoint must match to be resumed: the params that change the result (the trainer's config
    dataclass, :class:`searchr2.sft.SFTConfig` or :class:`searchr2.rl.RLConfig`), the input files' contents
    (``data_files``: name -> content hash), every file of the starting model directory, and the number
    of processes (which changes how the work is shared out). ``save_every_steps`` does not change the
    result and is left out."""
    h = hashlib.sha256()
    params = {k: v for k, v in asdict(cfg).items() if k != "save_every_steps"}
    h.update(json.dumps({"params": params, "data": sorted(data_files.values()), "processes": num_processes},
                        sort_keys=True).encode())
    base_dir = Path(base_dir)
    for f in sorted(p for p in base_dir.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(base_dir)).encode() + b"\0")
        sha256_file(f, h)
    return h.hexdigest()


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    found = []
    if root.is_dir():
        for d in root.iterdir():
            m = _CHECKPOINT.fullmatch(d.name)
            if m and d.is_dir() and (d / PROGRESS_FILE).exists():
                found.append((int(m.group(1)), d))
    return sorted(found)


def clean_checkpoints(root: str | os.PathLike, expected_fingerprint: str, stage: str) -> None:
    """Leave under ``root`` at most one checkpoint: the latest complete one, if it belongs to this run.

    Removes the temporary directories of interrupted saves, older checkpoints, and a stale checkpoint
    (written for other params, input data or starting model), saying so. Call on the main process only.
    """
    root = Path(root)
    if not root.is_dir():
        return
    for d in root.iterdir():
        if d.is_dir() and not _CHECKPOINT.fullmatch(d.name):   # an interrupted save
            shutil.rmtree(d, ignore_errors=True)
    found = _complete_checkpoints(root)
    for _, older in found[:-1]:
        shutil.rmtree(older, ignore_errors=True)
    if found:
        step, path = found[-1]
        progress = json.loads((path / PROGRESS_FILE).read_text())
        if progress.get("fingerprint") != expected_fingerprint:
            print(f"[{stage}] discarding the checkpoint at step {step}: it was written for other params, input "
                  "data or starting model", file=sys.stderr)
            shutil.rmtree(path)


def latest_checkpoint(root: str | os.PathLike) -> tuple[Path, dict] | None:
    """The latest complete checkpoint under ``root`` and its progress record, or None."""
    found = _complete_checkpoints(Path(root))
    if not found:
        return None
    path = found[-1][1]
    return path, json.loads((path / PROGRESS_FILE).read_text())


def resume(accelerator, checkpoint_dir: Path, run_id: str, fresh: dict, stage: str) -> tuple[dict, bool]:
    """Load the checkpoint of this same run (``run_id``) into the prepared objects, if there is one.

    Every process calls this after ``accelerator.prepare``. Returns the progress record to go on from
    (``fresh`` when starting afresh) and whether a checkpoint was loaded.
    """
    if accelerator.is_main_process:
        clean_checkpoints(checkpoint_dir, run_id, stage)
    accelerator.wait_for_everyone()
    found = latest_checkpoint(checkpoint_dir)
    if found is None:
        return fresh, False
    path, progress = found
    accelerator.load_state(str(path))
    return progress, True


def save_checkpoint(accelerator, root: str | os.PathLike, progress: dict) -> Path:
    """Save the full training state as ``root/step-<N>``, replacing the previous checkpoint.

    Every process writes its part into a temporary sibling; the main process adds ``progress.json``,
    renames the directory into place and only then removes the older checkpoint, so at every moment
    the latest complete checkpoint is on disk, and an interrupted save leaves only a temporary
    directory, which the next run removes.
    """
    root = Path(root)
    name = f"step-{progress['step']:07d}"
    final, tmp = root / name, root / f".{name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(drop_tied_copies)
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / PROGRESS_FILE).write_text(json.dumps(progress, indent=2, sort_keys=True) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, older in _complete_checkpoints(root):
                if older != final:
                    shutil.rmtree(older, ignore_errors=True)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        hook.remove()
    accelerator.wait_for_everyone()
    return final


def drop_tied_copies(models: list[torch.nn.Module], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
    """A save-state hook for Accelerate: leave each tied weight in the state dicts to save once, under the
    first of its names (as ``save_pretrained`` writes a model).

    A model with tied input and output embeddings holds one Parameter under two names. safetensors cannot
    store two names for one tensor, so Accelerate dropped the later name itself and logged "Removed shared
    tensor {'lm.lm_head.weight'} while saving" at every checkpoint. Dropping it here, by the model's own
    ties, writes the same file without the message; on loading, Accelerate (safetensors' ``load_model``)
    ties the dropped name back. Tensors that merely share memory without being the same Parameter are left
    alone, so Accelerate still warns about those. (Under DeepSpeed ``weights`` is empty: DeepSpeed saves
    the model itself.)
    """
    for model, state in zip(models, weights):
        first: dict[int, str] = {}
        for name, tensor in model.state_dict(keep_vars=True).items():
            if first.setdefault(id(tensor), name) != name and name in state:
                del state[name]



def remove_checkpoints(root: str | os.PathLike) -> None:
    """Remove every checkpoint under ``root`` (after the model is written), keeping ``root`` itself."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)       # an empty directory is still a valid DVC output
    for d in root.iterdir():
        shutil.rmtree(d) if d.is_dir() else d.unlink()


# ------------------------------------------------------------------------------------------ dvclive

def trim_live_plots(live_dir: Path, last_step: int) -> None:
    """Drop the rows a killed run logged after its last checkpoint, so resumed curves do not repeat steps.
    A row the kill cut short (too few columns, or no step number) is dropped too."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        step_col = header.index("step")

        def step_of(row: str) -> int | None:
            cells = row.split("\t")
            try:
                return int(cells[step_col]) if len(cells) == len(header) else None
            except ValueError:
                return None

        kept = [lines[0]] + [ln for ln in lines[1:] if (n := step_of(ln)) is not None and n <= last_step]
        tsv.write_text("\n".join(kept) + "\n")


def _reset_live_summary(live_dir: Path, last_step: int) -> None:
    """Make dvclive's summary (``metrics.json``, which it reads when resuming) readable and point it at the
    checkpoint's step. A run killed while dvclive was writing the file (not atomically) leaves it empty or
    cut short, and dvclive would then fail to resume; the values lost are logged again at the next step."""
    path = live_dir / "metrics.json"
    try:
        summary = json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    with atomic_file(path) as f:
        f.write(json.dumps({**summary, "step": last_step}, indent=4))


def open_live(live_dir: str | os.PathLike, resumed_from: int):
    """A dvclive logger writing to ``live_dir`` (metrics.json + per-step TSVs for DVC plots); a run resumed
    from step ``resumed_from`` > 0 continues the curves of the killed run, without its rows after that step."""
    from dvclive import Live

    if resumed_from:
        trim_live_plots(Path(live_dir), resumed_from)
        _reset_live_summary(Path(live_dir), resumed_from)
    return Live(dir=str(live_dir), resume=bool(resumed_from), save_dvc_exp=False, dvcyaml=None)
