"""Accelerate and DeepSpeed glue shared by the trainers (``sft`` and ``rl``).

The trainers are written once for every launch: a plain ``python -m stages.<stage>``, ``torchrun`` /
``accelerate launch`` with DDP, or ``accelerate launch`` with a DeepSpeed ZeRO config from
``configs/accelerate/``. What differs between them lives here:

* :func:`make_accelerator`: the params (device, precision, gradient clip) win over the launch config
  (precision ``auto`` is resolved per machine by :func:`resolve_precision`);
  under a DeepSpeed launch the device is left to DeepSpeed, and DeepSpeed gets the per-device batch
  size it insists on even when no data loader is prepared (``rl`` forms its own micro-batches).
* :func:`load_trainable_lm`: under ZeRO-3 the weights are partitioned while loading (never moved).
* :func:`frozen_copy`: the frozen KL reference, a plain full copy on every process, also under ZeRO-3.
* :func:`full_weights`: generation (rollouts, the refiner, validation) needs whole weight matrices;
  under ZeRO-3 they are gathered for the duration of the block on every process, so no process waits
  on another's generation length.
* :func:`lm_state_dict`: the trained weights, gathered (every process must call it).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from searchr2.models import load_model, native_bf16, pick_device

MIXED_PRECISION = ("fp32", "bf16", "fp16", "auto")   # fp32 = no autocast ("no" would read as false in YAML)


def resolve_precision(name: str, device: str) -> str:
    """A mixed_precision param value for this machine: ``name`` itself, or for ``auto`` bf16 where
    ``device`` multiplies bfloat16 natively (:func:`searchr2.models.native_bf16`: a CPU with AMX or
    AVX512-BF16, a CUDA GPU with bf16) and fp32 (no autocast) elsewhere."""
    if name != "auto":
        return name
    return "bf16" if native_bf16(pick_device(device)) else "fp32"


def precision_dtype(name: str) -> str:
    """The torch dtype name that a resolved mixed_precision value computes in (fp32 -> float32)."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[name]


def accelerate_precision(name: str) -> str:
    """Accelerate's name for a mixed_precision param value (it calls fp32 "no")."""
    return "no" if name == "fp32" else name


def deepspeed_launch() -> bool:
    """True inside ``accelerate launch`` with a DeepSpeed config (Accelerate says so in the environment)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(device: str, mixed_precision: str, max_grad_norm: float, section: str):
    """An :class:`accelerate.Accelerator` for ``<section>.device`` and ``<section>.mixed_precision``
    (``auto`` resolved by :func:`resolve_precision`; the accelerator's ``mixed_precision`` says what it became).

    A DeepSpeed launch picks its own device (a GPU; DeepSpeed's CPU accelerator where there is none),
    so ``device`` then only has to be possible. DeepSpeed clips gradients itself: its clip is set to
    ``max_grad_norm``, so the params file decides as it does without DeepSpeed.
    """
    from accelerate import Accelerator

    device = pick_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{section}.device is cuda but no CUDA device is visible; use cpu or auto")
    accelerator = Accelerator(cpu=device == "cpu" and not deepspeed_launch(),
                              mixed_precision=accelerate_precision(resolve_precision(mixed_precision, device)))
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        ds = plugin.deepspeed_config
        # the trainers build their own micro-batches; DeepSpeed only books this number, and needs one when
        # no data loader is prepared (rl)
        if not isinstance(ds.get("train_micro_batch_size_per_gpu"), int):
            ds["train_micro_batch_size_per_gpu"] = 1
            ds.pop("train_batch_size", None)
        ds["gradient_clipping"] = float(max_grad_norm)
    return accelerator


def zero_stage(accelerator) -> int:
    """The DeepSpeed ZeRO stage of this run; 0 without DeepSpeed."""
    plugin = accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage) if plugin is not None else 0


def load_trainable_lm(accelerator, base_dir: Path) -> torch.nn.Module:
    """The model to train, in float32. Under DeepSpeed it is loaded where DeepSpeed puts it (ZeRO-3 with
    ``zero3_init_flag`` partitions it while loading); it must not be moved afterwards."""
    from accelerate.utils import DistributedType
    from transformers import AutoModelForCausalLM

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return load_model(base_dir, "float32", str(accelerator.device))


def frozen_copy(accelerator, base_dir: Path, dtype: str = "float32") -> torch.nn.Module:
    """A frozen copy of the model in ``base_dir`` in ``dtype`` on this process's device, never partitioned
    (under ZeRO-3 with ``zero3_init_flag`` any model loaded meanwhile would be)."""
    from transformers.integrations.deepspeed import (is_deepspeed_zero3_enabled, set_hf_deepspeed_config,
                                                     unset_hf_deepspeed_config)

    config = getattr(accelerator.state.deepspeed_plugin, "dschf", None)
    if config is None or not is_deepspeed_zero3_enabled():
        return load_model(base_dir, dtype, str(accelerator.device), inference=True)
    unset_hf_deepspeed_config()                 # transformers partitions every model it loads while this is set
    try:
        model = load_model(base_dir, dtype, str(accelerator.device), inference=True)
    finally:
        set_hf_deepspeed_config(config)
    return model


def full_weights(accelerator, model: torch.nn.Module):
    """A context in which the prepared ``model``'s modules hold their whole weights: under ZeRO-3 the
    partitions are gathered on entry (every process must enter) and DeepSpeed's per-module gather hooks
    are lifted until exit (DeepSpeed's own ``unwrap_model_for_generation``), so a forward pass involves no
    other process; otherwise nothing."""
    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

    return unwrap_model_for_generation(model)


def lm_state_dict(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole state dict of the language model inside the prepared training wrapper ``model`` (which
    keeps it as ``.lm``), under the LM's own key names, each tied weight once (as ``save_pretrained``
    writes it). ZeRO-3 gathers it here: every process must call this; only the main process is sure
    to get the tensors (None elsewhere)."""
    state = accelerator.get_state_dict(model)
    if not state:
        return None
    own = accelerator.unwrap_model(model).lm.state_dict(keep_vars=True)
    first: dict[int, str] = {}
    for key, tensor in own.items():              # tied weights are one Parameter under several names
        first.setdefault(id(tensor), key)
    return {key: state[f"lm.{key}"] for key, tensor in own.items() if first[id(tensor)] == key}
