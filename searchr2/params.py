"""The params file (``params.yaml`` or a profile in ``configs/``), read strictly.

Each top-level section maps to the config dataclass of the module that owns those knobs, where
every knob is documented, once, at its field; the fields' defaults are the values of the default
profile ``params.yaml`` (a test compares them). Reading is strict in both directions so that a typo
can never silently fall back to a default: an unknown key, a missing key, or a value of the wrong
type is an :class:`~searchr2.io.InputError` naming the file, the YAML line and the dotted param name.

One type rule serves the reader and every dataclass: :func:`has_type`. Each config dataclass calls
:func:`check_types` first in its ``__post_init__`` and then checks only ranges and choices.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
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
    "server": "searchr2.server:ServerConfig",
}
#: top-level scalars that are not sections; ``profile`` is the profile's label, written into every results file
SCALARS: dict[str, type] = {"profile": str}


def section_class(name: str) -> type:
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def has_type(hint: Any, value: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (the one type rule of every config dataclass).

    An int is never a bool, a float (a number) may be an int but not a bool, ``X | None`` also
    accepts None, a list or tuple hint accepts a list or a tuple whose items all pass, a dataclass
    hint accepts an instance of that dataclass, and ``Any`` accepts anything.
    """
    if hint is Any:
        return True
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(has_type(arg, value) for arg in args)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(has_type(a, v) for a, v in zip(args, value))
        return all(has_type(args[0], v) for v in value) if args else True
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


_WORDS = {bool: "true or false", int: "an int", float: "a number", str: "a string", type(None): "None"}


def _type_words(hint: Any) -> str:
    """``hint`` in words for a message: "an int", "a number", "a string or None", "a list", ..."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_words(arg) for arg in typing.get_args(hint))
    if origin in (tuple, list) or hint in (tuple, list):
        return "a list"
    if hint in _WORDS:
        return _WORDS[hint]
    return f"a {getattr(hint, '__name__', hint)}"


@functools.cache
def _field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def check_types(config: Any, prefix: str = "") -> None:
    """Raise ``ValueError("<prefix><field> must be <type in words>, got <value>")`` for the first field
    of the dataclass instance ``config`` whose value does not match its annotation (see
    :func:`has_type`). Every config dataclass calls it first in its ``__post_init__``, so its own
    checks are about ranges and choices only."""
    for name, hint in _field_types(type(config)):
        value = getattr(config, name)
        if not has_type(hint, value):
            raise ValueError(f"{prefix}{name} must be {_type_words(hint)}, got {value!r}")


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
            if not has_type(list, value):
                raise self.error(dotted, f"expected a list, got {type(value).__name__}")
            item = args[0] if args else Any
            return tuple(self.value(item, v, dotted) for v in value)
        if not has_type(hint, value):
            if hint is bool:
                raise self.error(dotted, f"expected true/false, got {value!r}")
            raise self.error(dotted, f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return float(value) if hint is float else value

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
