"""Base model materialisation (searchr2.models): tiny, pretrained copy, SmolLM2 from GGUF."""
import json
import os

import pytest
import torch

from searchr2.models import (PROTOCOL_TAGS, ModelConfig, TinyModelConfig, load_model, load_tokenizer,
                             materialize_base_model, quiet_deepspeed_cpu_notice)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    names = ["Varen Koltho", "Mira Tesk", "Orvane Bay", "Kethra University", "Lumsey Dal"]
    with open(path, "w") as f:
        for i in range(200):
            a, b = names[i % 5], names[(i * 3 + 1) % 5]
            f.write(json.dumps({"id": str(i), "contents": f'"{a}"\n{a} was born in {1900 + i} near {b}.'}) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    materialize_base_model(ModelConfig(source="tiny", seed=3, tiny=TinyModelConfig(vocab_size=400)), out, corpus)
    return out


def test_tiny_tokenizer_has_single_token_tags_and_chat_template(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    for tag in PROTOCOL_TAGS:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    text = "<think>x</think><search>Varen Koltho</search>"
    assert tok.decode(tok(text)["input_ids"]) == text      # tags survive a round trip
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_tiny_model_is_seeded_and_generates(tiny_dir, corpus, tmp_path):
    again = tmp_path / "again"
    materialize_base_model(ModelConfig(source="tiny", seed=3, tiny=TinyModelConfig(vocab_size=400)), again, corpus)
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    model, tok = load_model(tiny_dir), load_tokenizer(tiny_dir)
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64
    ids = tok(["Varen Koltho was"], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5
    provenance = json.loads((tiny_dir / "searchr2_model.json").read_text())
    assert provenance["source"] == "tiny" and provenance["config"]["seed"] == 3


def test_tiny_needs_a_corpus(tmp_path):
    with pytest.raises(ValueError, match="trains its tokenizer on the corpus"):
        materialize_base_model(ModelConfig(source="tiny"), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_pretrained_copies_a_local_directory(tiny_dir, tmp_path):
    out = tmp_path / "copy"
    info = materialize_base_model(ModelConfig(source="pretrained", name_or_path=str(tiny_dir)), out)
    assert info["origin"] == "local"
    a, b = load_model(tiny_dir), load_model(out)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_pretrained_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        materialize_base_model(ModelConfig(source="pretrained", name_or_path=str(tmp_path / "absent")), tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        materialize_base_model(ModelConfig(source="pretrained", name_or_path=str(empty)), tmp_path / "o")
    # hub ids are unreachable offline: the error says which model and what to do instead
    with pytest.raises(RuntimeError, match="could not fetch model 'Org/NoSuchModel'.*local directory"):
        materialize_base_model(ModelConfig(source="pretrained", name_or_path="Org/NoSuchModel"), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_bad_config_values():
    with pytest.raises(ValueError, match="model.source must be one of"):
        ModelConfig(source="gpt")
    with pytest.raises(ValueError, match="needs model.name_or_path"):
        ModelConfig(source="pretrained")


def test_load_model_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the `model` stage"):
        load_model(tmp_path)


@pytest.mark.slow
def test_smollm2_converts_from_the_wheel_and_answers(smollm2_dir):
    out = smollm2_dir                                   # converted by materialize_base_model (conftest)
    info = json.loads((out / "searchr2_model.json").read_text())
    assert info["gguf_file"].endswith(".gguf") and len(info["gguf_sha256"]) == 64
    model, tok = load_model(out), load_tokenizer(out)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert not hasattr(model.config, "quantization_config")
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out_ids = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out_ids[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_deepspeeds_no_gpu_notice_is_dropped_and_its_other_messages_kept():
    """DeepSpeed's accelerator probe (run by Accelerate on first use) logs "Setting accelerator to CPU"
    where it finds no GPU; after quiet_deepspeed_cpu_notice that record, and only that one, is gone."""
    import logging

    pytest.importorskip("deepspeed")
    import deepspeed.accelerator.real_accelerator as probe

    logger = logging.getLogger("DeepSpeed")
    kept_filters, kept_accelerator = list(logger.filters), probe.ds_accelerator
    seen: list[str] = []
    recorder = logging.Handler(logging.WARNING)
    recorder.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(recorder)
    try:
        for f in kept_filters:                      # as in a fresh process (the model stage adds the filter)
            logger.removeFilter(f)
        probe.ds_accelerator = None
        probe.get_accelerator()
        probed_cpu = probe.get_accelerator().device_name() == "cpu" and not os.environ.get("DS_ACCELERATOR")
        assert any(m.startswith("Setting accelerator to CPU") for m in seen) == probed_cpu   # the probe talks
        seen.clear()
        quiet_deepspeed_cpu_notice()
        quiet_deepspeed_cpu_notice()                # idempotent
        assert len(logger.filters) == 1
        probe.ds_accelerator = None
        probe.get_accelerator()
        logger.warning("another DeepSpeed warning")
        assert seen == ["another DeepSpeed warning"]
    finally:
        logger.removeHandler(recorder)
        logger.filters[:] = kept_filters
        probe.ds_accelerator = kept_accelerator


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, "bfloat16"), (False, True, "bfloat16"),
                                                         (False, False, "float32")])
def test_auto_dtype_is_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch, amx, avx512_bf16, expected):
    from searchr2.models import resolve_dtype

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("float32", "cpu") == "float32" and resolve_dtype("bfloat16", "cpu") == "bfloat16"


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_mixed_precision_is_bf16_autocast_only_where_bf16_is_native(monkeypatch, native, expected):
    from searchr2.distributed import precision_dtype, resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert precision_dtype(expected) == {"bf16": "bfloat16", "fp32": "float32"}[expected]


def test_auto_dtype_loads_the_model_in_the_resolved_dtype(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert next(load_model(tiny_dir, "auto").parameters()).dtype == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert next(load_model(tiny_dir, "auto").parameters()).dtype == torch.bfloat16
