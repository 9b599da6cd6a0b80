"""A key/value cache that grows in place, for the rollout engine's long multi-turn contexts.

Hugging Face's ``DynamicCache`` appends each step's keys and values with ``torch.cat``, which copies the
whole cache: one decoded token costs a copy of every row's keys and values in every layer. For the
agent's contexts (up to thousands of tokens, a batch of rows, 30 layers) that copy, not the model, is
most of a decoding step on a CPU (``docs/measurements.md``, "Rollout speed"). :class:`GrowingLayer`
keeps each layer's keys and values in a buffer with room to spare along the sequence axis and writes a
step's new columns into it; the buffer is reallocated (one copy) only when full, growing by half
its size, so the copies cost amortised O(1) per token instead of O(context).

The layer is a ``DynamicLayer`` whose ``keys``/``values`` are views of the filled part of the buffer,
so everything else (attention, ``get_seq_length``, masks) sees an ordinary dynamic cache. Row
selection and repetition (``batch_select_indices``, ``batch_repeat_interleave``) and ``crop`` act on
the buffers and keep the spare room. Hand-written because transformers has no growable cache: its
``StaticCache`` fixes the length up front for every row, and the engine's caches grow turn by turn.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

#: room added when a buffer is (re)allocated: at least this many columns, and at least half the length
MIN_HEADROOM = 64


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in buffers with spare columns (module docstring)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k = self._v = None
        self._n = 0

    def _adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Make ``keys``/``values`` (full tensors) the buffers' content, with fresh spare room."""
        n = keys.shape[-2]
        capacity = n + max(MIN_HEADROOM, n // 2)
        shape = (*keys.shape[:-2], capacity, keys.shape[-1])
        self._k = keys.new_empty(shape)
        self._v = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._k[..., :n, :] = keys
        self._v[..., :n, :] = values
        self._n = n
        self._expose()

    def _expose(self) -> None:
        self.keys = self._k[..., :self._n, :]
        self.values = self._v[..., :self._n, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._k is None:
            self._adopt(key_states, value_states)
            return self.keys, self.values
        if self._n + new > self._k.shape[-2]:
            self._adopt(torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2))
            return self.keys, self.values
        self._k[..., self._n:self._n + new, :] = key_states
        self._v[..., self._n:self._n + new, :] = value_states
        self._n += new
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n if self.is_initialized and self._k is not None else 0

    def reset(self) -> None:
        self._k = self._v = None
        self._n = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)             # checks the argument and narrows keys/values
        if self.is_initialized and self._k is not None:
            self._n = self.keys.shape[-2]
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._k = self._k[indices, ...]        # advanced indexing copies: a cache copied with copy.copy
            self._v = self._v[indices, ...]        # and narrowed leaves the original's buffers alone
            self._expose()


def growing_cache(config) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose full-attention layers are :class:`GrowingLayer` (sliding-window
    layers, where a model has them, stay as transformers makes them)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
