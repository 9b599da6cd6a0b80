"""Strict params files and profiles (searchr2.params, searchr2.profile)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from searchr2.io import InputError
from searchr2.params import SECTIONS, check_types, has_type, load_params, section_class
from searchr2.profile import main as profile_main

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_is_complete_and_valid(path):
    params = load_params(path)
    assert set(params.sections) == set(SECTIONS)


def test_dataclass_defaults_are_the_default_profile():
    """Each knob is documented once, at its dataclass field; so the field's default must be what the
    default profile (params.yaml) says, or a reader of the dataclass is told a different value."""
    params = load_params(ROOT / "params.yaml")
    for name in SECTIONS:
        assert params.sections[name] == section_class(name)(), f"section {name!r}: defaults differ from params.yaml"


def test_has_type():
    assert has_type(int, 3) and not has_type(int, True) and not has_type(int, 3.0) and not has_type(int, "3")
    assert has_type(float, 1.5) and has_type(float, 2) and not has_type(float, False) and not has_type(float, "1")
    assert has_type(bool, False) and not has_type(bool, 0)
    assert has_type(str, "") and not has_type(str, None)
    assert has_type(int | None, None) and has_type(int | None, 4) and not has_type(int | None, "4")
    assert has_type(tuple[str, ...], ("a", "b")) and has_type(tuple[str, ...], ["a"]) and has_type(tuple[str, ...], ())
    assert not has_type(tuple[str, ...], ("a", 1)) and not has_type(tuple[str, ...], "ab")
    assert has_type(tuple, [1, "x"]) and has_type(list, (1,)) and not has_type(list, {"a": 1})
    assert has_type(tuple[int, str], (1, "x")) and not has_type(tuple[int, str], (1, "x", 2))
    assert has_type(Any, object())
    tiny = section_class("model")().tiny
    assert has_type(type(tiny), tiny) and not has_type(type(tiny), {"hidden_size": 64})


@dataclass(frozen=True)
class _Knobs:
    count: int = 1
    rate: float = 0.5
    flag: bool = True
    name: str = "x"
    cap: int | None = None
    sets: tuple[str, ...] = ("a",)

    def __post_init__(self):
        check_types(self, "knobs: ")


def test_check_types_names_the_first_bad_field():
    _Knobs(rate=1, cap=3, sets=["b"])                         # an int is a number; a list is a tuple's value
    for kw, message in (({"count": True}, "knobs: count must be an int, got True"),
                        ({"rate": "fast"}, "knobs: rate must be a number, got 'fast'"),
                        ({"flag": "yes"}, "knobs: flag must be true or false, got 'yes'"),
                        ({"name": 3}, "knobs: name must be a string, got 3"),
                        ({"cap": 2.5}, "knobs: cap must be an int or None, got 2.5"),
                        ({"sets": "ab"}, "knobs: sets must be a list, got 'ab'"),
                        ({"count": 1.5, "flag": 0}, "knobs: count must be an int, got 1.5")):
        with pytest.raises(ValueError) as e:
            _Knobs(**kw)
        assert str(e.value) == message


def test_profiles_differ_where_they_should():
    default, smoke = load_params(ROOT / "params.yaml"), load_params(ROOT / "configs/smoke.yaml")
    paper = load_params(ROOT / "configs/paper-qwen2.5-7b.yaml")
    assert default.model.source == "smollm2" and smoke.model.source == "tiny"
    assert paper.model.name_or_path == "Qwen/Qwen2.5-7B" and paper.data.source == "hub"
    assert paper.index.dense.query_prefix == "query: " and paper.index.dense.passage_prefix == "passage: "
    assert smoke.world.n_entities < default.world.n_entities


def test_cpu_study_changes_only_the_rl_run():
    """The study profile must reuse every cached stage before rl, and the base and SFT models' evaluations:
    only rl params differ (the profile label is no evaluation param)."""
    default, study = load_params(ROOT / "params.yaml"), load_params(ROOT / "configs/cpu-study.yaml")
    differ = {name for name in SECTIONS if default.sections[name] != study.sections[name]}
    assert differ == {"rl"}
    assert study.rl.steps * study.rl.questions_per_step > default.rl.steps * default.rl.questions_per_step



def test_refiner_study_changes_only_the_warm_up_mix():
    """The refiner study (the warm-up the ablation ladder ran on) keeps everything of the default but the
    mix of the refiner's training examples: more of them, half clean, fewer passes. So the base model's
    evaluation is reused and its EM table compares with the default's."""
    default, study = load_params(ROOT / "params.yaml"), load_params(ROOT / "configs/refiner-study.yaml")
    differ = {name for name in SECTIONS if default.sections[name] != study.sections[name]}
    assert differ == {"sft", "sft_data"} and study.profile == "refiner-study"
    changed = {(section, key) for section in ("sft", "sft_data")
               for key, value in vars(getattr(default, section)).items() if getattr(getattr(study, section), key) != value}
    assert changed == {("sft", "refiner_passes"), ("sft_data", "refiner_examples"), ("sft_data", "refiner_clean_share")}
    assert study.sft_data.refiner_examples * study.sft.refiner_passes > \
        default.sft_data.refiner_examples * default.sft.refiner_passes         # the longer warm-up
    # the held-out refiner examples depend on neither, so every model's refiner is scored on the same 60
    assert study.sft_data.refiner_heldout == default.sft_data.refiner_heldout

def _variant(tmp_path, old, new):
    text = (ROOT / "params.yaml").read_text()
    assert old in text
    p = tmp_path / "variant.yaml"
    p.write_text(text.replace(old, new, 1))
    return p


def test_unknown_param_names_line_and_suggests(tmp_path):
    p = _variant(tmp_path, "  n_entities: 2500", "  n_entites: 2500")
    line = p.read_text().splitlines().index("  n_entites: 2500") + 1
    with pytest.raises(InputError) as e:
        load_params(p)
    assert str(e.value).startswith(f"{p}:{line}: field 'world.n_entites': unknown param; did you mean 'world.n_entities'?")


def test_missing_param_is_an_error(tmp_path):
    p = _variant(tmp_path, "  top_k: 3", "")
    with pytest.raises(InputError, match=r"field 'rollout.top_k': missing"):
        load_params(p)


def test_wrong_type_is_an_error(tmp_path):
    p = _variant(tmp_path, "  top_k: 3", "  top_k: three")
    with pytest.raises(InputError, match=r"field 'rollout.top_k': expected int, got str 'three'"):
        load_params(p)
    p = _variant(tmp_path, "normalize: true", "normalize: 1")
    with pytest.raises(InputError, match=r"field 'index.dense.normalize': expected true/false"):
        load_params(p)


def test_module_validation_is_located(tmp_path):
    p = _variant(tmp_path, "source: smollm2", "source: gpt5")
    with pytest.raises(InputError, match=r"field 'model': model.source must be one of"):
        load_params(p)


def test_profile_switch_refuses_invalid_and_copies_valid(tmp_path, capsys):
    target = tmp_path / "params.yaml"
    target.write_text("keep me")
    bad = _variant(tmp_path, "  top_k: 3", "  top_kk: 3")
    assert profile_main([str(bad), "--to", str(target)]) == 2
    assert target.read_text() == "keep me"
    assert profile_main([str(ROOT / "configs/smoke.yaml"), "--to", str(target)]) == 0
    assert load_params(target).profile == "smoke"
