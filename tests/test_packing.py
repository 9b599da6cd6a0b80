"""Packed linear weights for bfloat16 inference on a CPU (searchr2/packing.py): the same numbers, bit for bit."""
import copy

import pytest
import torch

from conftest import make_tiny_model
from searchr2.models import load_model
from searchr2.packing import PackedLinear, pack_linears, packing_available, repack

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("packing"), seed=3)


def _linears(model) -> int:
    return sum(type(m) is torch.nn.Linear for m in model.modules())


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_a_bf16_model_is_packed_where_onednn_runs_bf16_and_computes_the_same_logits(tiny):
    plain = load_model(tiny, "bfloat16").eval()
    packed = load_model(tiny, "bfloat16", inference=True)
    linears = _linears(plain)
    assert linears > 0 and not packed.training and not any(p.requires_grad for p in packed.parameters())
    if not packing_available():                  # an AVX2-only CPU: nothing is packed, the model is as loaded
        assert _linears(packed) == linears and not any(isinstance(m, PackedLinear) for m in packed.modules())
        return
    assert _linears(packed) == 0 and sum(isinstance(m, PackedLinear) for m in packed.modules()) == linears
    # the weights are the model's own: still tied, the same state dict
    assert packed.lm_head.weight is packed.model.embed_tokens.weight
    assert packed.state_dict().keys() == plain.state_dict().keys()
    gen = torch.Generator().manual_seed(0)
    for rows, length in ((1, 1), (3, 17), (64, 1), (8, 120)):
        ids = torch.randint(0, packed.config.vocab_size, (rows, length), generator=gen)
        assert torch.equal(_logits(packed, ids), _logits(plain, ids)), (rows, length)


def test_float32_models_and_training_models_are_left_alone(tiny):
    fp32 = load_model(tiny, "float32", inference=True)
    assert pack_linears(fp32) == 0 and not any(isinstance(m, PackedLinear) for m in fp32.modules())
    trainable = load_model(tiny, "bfloat16")
    assert not any(isinstance(m, PackedLinear) for m in trainable.modules())
    assert all(p.requires_grad for p in trainable.parameters())


def test_weights_changed_in_place_count_only_after_repack(tiny):
    model = load_model(tiny, "bfloat16", inference=True)
    if not packing_available():
        assert pack_linears(model) == 0
        return
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    before = _logits(model, ids)
    with torch.no_grad():
        model.model.layers[-1].mlp.down_proj.weight.mul_(-1.0)
    assert torch.equal(_logits(model, ids), before)           # the packed copy is what multiplies
    repack(model, [model.model.layers[0].mlp.down_proj.weight])   # another layer's weight: still stale
    assert torch.equal(_logits(model, ids), before)
    repack(model, [model.model.layers[-1].mlp.down_proj.weight])
    fresh = load_model(tiny, "bfloat16").eval()
    with torch.no_grad():
        fresh.model.layers[-1].mlp.down_proj.weight.mul_(-1.0)
    assert torch.equal(_logits(model, ids), _logits(fresh, ids))


def test_float32_activations_under_autocast_take_the_plain_product(tiny):
    model = load_model(tiny, "bfloat16", inference=True)
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(3, layer.in_features)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, plain = layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert out.dtype == torch.bfloat16 and torch.equal(out, plain)


@pytest.mark.slow
def test_smollm2_greedy_rollouts_are_identical_packed_and_unpacked(smollm2_dir):
    """The real model's shapes (SmolLM2-135M, 30 layers) through the rollout engine, greedy, without search:
    the packed model writes the same tokens as the plain one."""
    from searchr2.models import load_tokenizer
    from searchr2.rollout import RolloutConfig, rollout

    plain = load_model(smollm2_dir, "bfloat16").eval()
    packed = load_model(smollm2_dir, "bfloat16", inference=True)
    tok = load_tokenizer(smollm2_dir)
    cfg = RolloutConfig(max_turns=0, max_new_tokens=24, do_sample=False, batch_size=8)
    questions = ["Who wrote the novel about the lighthouse keeper?", "Which river flows through the capital?",
                 "In which year was the old bridge built?", "What is the largest lake of the country?"]
    a = rollout(plain, tok, None, questions, cfg)
    b = rollout(packed, tok, None, questions, cfg)
    assert [t.token_ids for t in a] == [t.token_ids for t in b]
    assert packing_available() == any(isinstance(m, PackedLinear) for m in packed.modules())


def test_the_packed_copy_deep_copies_and_keeps_its_numbers(tiny):
    model = load_model(tiny, "bfloat16", inference=True)
    twin = copy.deepcopy(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(2))
    assert torch.equal(_logits(twin, ids), _logits(model, ids))
