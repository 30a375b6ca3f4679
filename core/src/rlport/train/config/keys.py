"""The schema read as dotted keys: every key's type, field, documentation and default, and an example
value for error messages (``--show-config`` and the verl key table are built from these).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from rlport.train.config.schema import (
    TrainConfig,
)


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    """``cls``'s fields and their types: its own first, then those it shares through a base
    (:class:`UpdateConfig`), so ``--show-config`` opens ``actor`` with its strategy."""
    hints = typing.get_type_hints(cls)
    shared = {
        f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)
    }
    fields = dataclasses.fields(cls)
    ordered = [f for f in fields if f.name not in shared] + [f for f in fields if f.name in shared]
    return [(f, hints[f.name]) for f in ordered]


def all_keys(cls: type = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Every settable dotted key of the configuration and its type."""
    out: dict[str, Any] = {}
    for f, tp in _fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out.update(all_keys(tp, key + "."))
        else:
            out[key] = tp
    return out


def all_fields(cls: type = TrainConfig, prefix: str = "") -> dict[str, dataclasses.Field[Any]]:
    """Every dotted key and its dataclass field (``field.metadata`` holds doc, range, choices);
    sections included."""
    out: dict[str, dataclasses.Field[Any]] = {}
    for f, tp in _fields(cls):
        key = f"{prefix}{f.name}"
        out[key] = f
        if dataclasses.is_dataclass(tp):
            out.update(all_fields(tp, key + "."))
    return out


def doc(key: str) -> str:
    """The documentation of dotted ``key`` ("" when it has none)."""
    f = all_fields().get(key)
    return str(f.metadata.get("doc", "")) if f is not None else ""


def default_value(key: str) -> Any:
    """The default of dotted ``key``."""
    obj: Any = TrainConfig()
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def optional_inner(tp: Any) -> Any:
    """``T`` for ``T | None``, else ``tp``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType) and type(None) in args:
        return f"{type_name(optional_inner(tp))} or null"
    if origin is list:
        return f"a list of {type_name(args[0])} ([a,b,...])"
    if origin is dict:
        return "a mapping (set entries as key.sub=value)"
    if dataclasses.is_dataclass(tp):
        return "a section (set its keys as section.key=value)"
    return {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}.get(
        tp, str(tp)
    )


def example(key: str) -> str:
    """``key=<a value that works>``: the default where it is a plain value."""
    tp = all_keys().get(key)
    if tp is None:
        return f"{key}=..."
    value = default_value(key)
    inner = optional_inner(tp)
    if typing.get_origin(inner) is list:
        return f"{key}=[{','.join(str(v) for v in value)}]" if value else f"{key}=[a,b]"
    if typing.get_origin(inner) is dict:
        return f"{key}.NAME=VALUE"
    if value is None or value == "":
        named = [c for c in all_fields()[key].metadata.get("choices", ()) if c not in (None, "")]
        if named:  # a setting that is off by default: its first choice
            return f"{key}={named[0]}"
        return f"{key}=" + {int: "1", float: "0.5", bool: "true", str: "VALUE"}.get(inner, "VALUE")
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value}"
