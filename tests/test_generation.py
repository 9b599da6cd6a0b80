"""The generation set-up shared by the rollout engine, the refiner and the LLM judge (searchr2.generation)."""
from types import SimpleNamespace

import pytest
import torch

from searchr2.generation import by_length, eos_ids, eval_mode, generation_config, left_pad, pad_id


def test_pad_id_falls_back_to_eos():
    assert pad_id(SimpleNamespace(pad_token_id=3, eos_token_id=7)) == 3
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=7)) == 7
    assert pad_id(SimpleNamespace(pad_token_id=0, eos_token_id=7)) == 0      # 0 is a real id, not "missing"


def test_eos_ids_join_tokenizer_and_model_generation_config():
    tok = SimpleNamespace(eos_token_id=2)
    assert eos_ids(SimpleNamespace(), tok) == {2}
    assert eos_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[5, 2])), tok) == {2, 5}
    assert eos_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=9)),
                   SimpleNamespace(eos_token_id=None)) == {9}


def test_left_pad_puts_each_row_at_the_right_end():
    ids, mask = left_pad([[4, 5, 6], [7], []], pad=0)
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_by_length_batches_shortest_first_ties_in_index_order():
    prompts = [[1] * 3, [1], [1] * 2, [1], [1] * 5]
    assert by_length(prompts, 2) == [[1, 3], [2, 0], [4]]
    assert by_length([], 4) == []


def test_generation_config_states_pad_eos_and_penalty():
    tok = SimpleNamespace(pad_token_id=None, eos_token_id=7)
    cfg = generation_config(tok, {9, 7}, 12, do_sample=False)
    assert (cfg.max_new_tokens, cfg.pad_token_id, cfg.eos_token_id, cfg.repetition_penalty, cfg.do_sample) == \
        (12, 7, [7, 9], 1.0, False)
    assert generation_config(tok, set(), 3).eos_token_id is None


def test_eval_mode_restores_the_previous_mode_even_on_error():
    model = torch.nn.Linear(2, 2)
    model.train()
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            assert not model.training
            raise RuntimeError("boom")
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training
    with eval_mode(object()):      # a test double without train/eval
        pass
