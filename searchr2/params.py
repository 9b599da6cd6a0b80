"""The params file (``params.yaml`` or a profile in ``configs/``), read strictly.

Each top-level section maps to the config dataclass of the module that owns those knobs, where
every knob is documented. Reading is strict in both directions so that a typo can never silently
fall back to a default: an unknown key, a missing key, or a value of the wrong type is an
:class:`~searchr2.io.InputError` naming the file, the YAML line and the dotted param name.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from searchr2.io import InputError

#: section name -> "module:Class" of its config dataclass (imported lazily: stages stay light).
SECTIONS: dict[str, str] = {
    "world": "searchr2.world:WorldConfig",
    "data": "searchr2.data:DataConfig",
    "model": "searchr2.models:ModelConfig",
    "index": "searchr2.retrieval:IndexConfig",
    "retrieval": "searchr2.retrieval:RetrievalConfig",
    "rollout": "searchr2.rollout:RolloutConfig",
    "sft": "searchr2.sft:SFTConfig",
    "refiner": "searchr2.refiner:RefinerConfig",
    "sft_data": "searchr2.sft_data:SFTDataConfig",
    "reward": "searchr2.reward:RewardConfig",
    "rl": "searchr2.rl:RLConfig",
    "evaluate": "searchr2.evaluation:EvalConfig",
}
#: top-level scalars that are not sections
SCALARS: dict[str, type] = {"profile": str}


def section_class(name: str) -> type:
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _key_lines(text: str) -> dict[str, int]:
    """Map each dotted key of a YAML mapping to its 1-based line, for error messages."""
    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}{key.value}"
                lines[dotted] = key.start_mark.line + 1
                walk(value, dotted + ".")

    walk(yaml.compose(text), "")
    return lines


class _Reader:
    def __init__(self, path: Path, lines: dict[str, int]):
        self.path, self.lines = path, lines

    def error(self, dotted: str, message: str) -> InputError:
        line = self.lines.get(dotted) or self.lines.get(dotted.rsplit(".", 1)[0])
        return InputError(self.path, message, line=line, field=dotted)

    def check_keys(self, given: dict, known: list[str], prefix: str) -> None:
        for key in given:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(known)}"
                raise self.error(f"{prefix}{key}", f"unknown param{hint}")
        for key in known:
            if key not in given:
                raise self.error(f"{prefix}{key}".rstrip("."), "missing (every profile lists every param)")

    def value(self, hint: Any, value: Any, dotted: str) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            return self.dataclass(hint, value, dotted)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], value, dotted)
        if origin in (tuple, list) or hint in (tuple, list):
            if not isinstance(value, (list, tuple)):
                raise self.error(dotted, f"expected a list, got {type(value).__name__}")
            item = args[0] if args else Any
            return tuple(self.value(item, v, dotted) for v in value)
        if hint is Any:
            return value
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is bool and not isinstance(value, bool):
            raise self.error(dotted, f"expected true/false, got {value!r}")
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise self.error(dotted, f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return value

    def dataclass(self, cls: type, data: Any, prefix: str) -> Any:
        if not isinstance(data, dict):
            raise self.error(prefix, f"expected a mapping of params, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        self.check_keys(data, names, prefix + ".")
        kwargs = {n: self.value(hints[n], data[n], f"{prefix}.{n}") for n in names}
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as e:  # a module's own validation (__post_init__)
            raise self.error(prefix, str(e)) from None


@dataclasses.dataclass(frozen=True)
class Params:
    """All sections of one params file, each as its owning module's config dataclass."""

    path: Path
    profile: str
    sections: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a whole params file: every stage checks every section, so a typo anywhere
    stops the first stage that runs, not the one that happens to read it."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "params file not found")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputError(path, f"not valid YAML: {getattr(e, 'problem', e)}", line=None if line is None else line + 1) from None
    reader = _Reader(path, _key_lines(text))
    if not isinstance(raw, dict):
        raise InputError(path, "expected a mapping of sections")
    reader.check_keys(raw, list(SCALARS) + list(SECTIONS), "")
    for key, kind in SCALARS.items():
        reader.value(kind, raw[key], key)
    sections = {name: reader.dataclass(section_class(name), raw[name], name) for name in SECTIONS}
    return Params(path=path, profile=raw["profile"], sections=sections)
