"""What every caller of a Hugging Face causal LM here sets up the same way before asking it anything.

The rollout engine (:mod:`searchr2.rollout`), the Meta-Refiner's scoring (:mod:`searchr2.refiner`) and
the LLM judge (:mod:`searchr2.judge`) all feed batches of token-id prompts of different lengths to a
model. They share:

* the pad id (the tokenizer's pad token, else its EOS token) and **left** padding, so the last
  column of every row is the row's last real token (where generation and next-token scoring read);
* the EOS ids: the tokenizer's and those of the model's own ``generation_config`` (some chat models
  end a reply with a token that is not the tokenizer's EOS);
* a :class:`~transformers.GenerationConfig` that states the decoding completely (max new tokens,
  pad, EOS, no repetition penalty), so a model's own generation defaults cannot change what is generated;
* eval mode for the call, with the model's previous mode restored afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager


def pad_id(tokenizer) -> int:
    """The id that fills the left of shorter rows: the pad token, else the EOS token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def eos_ids(model, tokenizer) -> set[int]:
    """Every id that ends a reply: the tokenizer's EOS and the model's ``generation_config`` EOS (one or a list)."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def left_pad(rows: list[list[int]], pad: int):
    """``(ids, attention_mask)``, two long tensors of shape ``(len(rows), longest row)``: each row's ids
    at its right end, ``pad`` (mask 0) on its left. An empty row is all padding."""
    import torch

    ids = torch.full((len(rows), max(len(row) for row in rows)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        if row:
            ids[r, -len(row):] = torch.tensor(row, dtype=torch.long)
            mask[r, -len(row):] = 1
    return ids, mask


def by_length(prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``prompts`` in batches of ``batch_size``, shortest prompts together (ties in index order),
    so the rows of one batch need little padding."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def generation_config(tokenizer, eos: set[int], max_new_tokens: int, **decoding):
    """A ``GenerationConfig`` with pad, EOS (sorted; None when there is none) and no repetition penalty
    set explicitly; ``decoding`` adds the rest (``do_sample`` and its knobs, ``return_dict_in_generate`` …)."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=pad_id(tokenizer),
                            eos_token_id=sorted(eos) or None, repetition_penalty=1.0, **decoding)


@contextmanager
def eval_mode(model):
    """The model in eval mode inside the block (dropout off); its previous train/eval mode restored after,
    also on an error. Objects without ``eval``/``train`` (test doubles) are left alone."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield model
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
