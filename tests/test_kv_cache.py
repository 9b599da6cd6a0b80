"""The in-place growing KV cache behaves as transformers' DynamicCache, without copying it at every token."""
import copy

import pytest
import torch
from transformers import DynamicCache

from searchr2.kv_cache import MIN_HEADROOM, GrowingLayer, growing_cache
from searchr2.models import load_model, load_tokenizer
from conftest import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread


def _kv(rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, cols, 4, generator=g), torch.randn(rows, 2, cols, 4, generator=g)


def test_growing_layer_matches_a_dynamic_layer_through_every_operation():
    from transformers.cache_utils import DynamicLayer

    grow, plain = GrowingLayer(), DynamicLayer()
    steps = [(3, 5), (3, 1), (3, 1), (3, 80), (3, 1)]        # a prefill, decoding, a long tool output
    for seed, (rows, cols) in enumerate(steps):
        k, v = _kv(rows, cols, seed)
        a, b = grow.update(k, v), plain.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert grow.get_seq_length() == plain.get_seq_length()
    index = torch.tensor([2, 0])
    for layer in (grow, plain):
        layer.batch_select_indices(index)
        layer.batch_repeat_interleave(2)
        layer.crop(-3)
    assert torch.equal(grow.keys, plain.keys) and torch.equal(grow.values, plain.values)
    k, v = _kv(4, 1, 99)
    assert torch.equal(grow.update(k, v)[0], plain.update(k, v)[0])
    assert grow.get_seq_length() == plain.get_seq_length() == 5 + 1 + 1 + 80 + 1 - 3 + 1


def test_growing_layer_writes_in_place_until_full():
    layer = GrowingLayer()
    k, v = _kv(2, 10, 0)
    layer.update(k, v)
    buffer = layer._k
    capacity = buffer.shape[-2]
    assert capacity == 10 + MIN_HEADROOM
    for step in range(capacity - 10):                         # decoding fills the spare room without copies
        layer.update(*_kv(2, 1, step + 1))
        assert layer._k is buffer
    layer.update(*_kv(2, 1, 1000))                            # full: one reallocation, half again as much room
    assert layer._k is not buffer and layer._k.shape[-2] == capacity + 1 + max(MIN_HEADROOM, (capacity + 1) // 2)


def test_a_shallow_copy_narrowed_to_some_rows_leaves_the_original_alone():
    """What the rollout engine's review does (searchr2.rollout._cache_rows)."""
    layer = GrowingLayer()
    layer.update(*_kv(3, 6, 0))
    before = layer.keys.clone()
    sub = copy.copy(layer)
    sub.batch_select_indices(torch.tensor([1]))
    sub.update(*_kv(1, 2, 1))
    assert torch.equal(layer.keys, before) and layer.get_seq_length() == 6 and sub.get_seq_length() == 8


def test_generation_with_the_growing_cache_equals_the_default(tmp_path):
    model_dir = make_tiny_model(tmp_path, seed=3)
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    ids = torch.tensor([tok("the lighthouse keeper wrote", add_special_tokens=False)["input_ids"]] * 2)
    ids[1, :2] = tok.pad_token_id or 0
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    outs = {}
    for name, cache in (("growing", growing_cache(model.config)), ("default", DynamicCache(config=model.config))):
        outs[name] = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=90,
                                    do_sample=False, output_scores=True, return_dict_in_generate=True,
                                    pad_token_id=tok.pad_token_id or 0)
        assert cache.get_seq_length() == ids.shape[1] + 90 - 1
    assert torch.equal(outs["growing"].sequences, outs["default"].sequences)
    for a, b in zip(outs["growing"].scores, outs["default"].scores):
        assert torch.allclose(a, b, atol=1e-5)
    assert all(type(layer) is GrowingLayer for layer in growing_cache(model.config).layers)
