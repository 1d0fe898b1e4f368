"""Checking a mapping read from YAML against a frozen dataclass: names, types, ranges and choices.

A field declares what it accepts with ``at_least``, ``between``, ``one_of`` or ``free``, and is
optional when given a default. ``build_section`` builds the dataclass or raises a ``ParamsError``
naming the file and the key; ``type_ok`` and ``range_error`` also check the ``trainer``
sections against TRL's own config types.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any

from medjson.errors import ParamsError


def at_least(low: float, default: Any = MISSING) -> Any:
    return field(default=default, metadata={"range": (low, None)})


def between(low: float, high: float, default: Any = MISSING) -> Any:
    return field(default=default, metadata={"range": (low, high)})


def one_of(*choices: str, default: Any = MISSING) -> Any:
    return field(default=default, metadata={"choices": choices})


def free(default: Any = MISSING) -> Any:
    """A field any value of its type fits (a model or data location, a flag)."""
    return field(default=default, metadata={"free": True})


def type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(type_ok(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(type_ok(v, item) for v in value)
    if origin is dict:
        key_t, value_t = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, dict) and all(
            (key_t is Any or type_ok(k, key_t)) and (value_t is Any or type_ok(v, value_t)) for k, v in value.items()
        )
    if annotation is Any or not isinstance(annotation, type):
        return True  # a form this check does not know: the consumer validates it
    return isinstance(value, annotation)


def type_error(source: Path, path: str, value: Any, annotation: Any) -> ParamsError:
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = " (YAML read this number as a string: write floats as 2.0e-4, and numbers without quotes)"
        except ValueError:
            pass
    shown = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
    return ParamsError(f"{source}: `{path}` = {value!r} is not of type {shown}{hint}")


def range_error(source: Path, path: str, value: Any, low: float | None, high: float | None) -> ParamsError | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return ParamsError(f"{source}: `{path}` = {value!r} must be a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        return ParamsError(f"{source}: `{path}` = {value!r} is out of range: it must be {bounds}")
    return None


def build_section(cls: type, data: Any, where: str, source: Path) -> Any:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: `{where}` must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("not_a_key")]
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamsError(f"{source}: unknown key `{where}.{unknown[0]}`; known keys: {sorted(known)}")
    optional = {f.name for f in fields if f.default is not MISSING}
    missing = sorted(known - set(data) - optional)
    if missing:
        raise ParamsError(f"{source}: missing key `{where}.{missing[0]}`")
    values = {}
    for f in fields:
        if f.name not in data:
            continue  # an optional key left out: the field's default
        annotation, value, path = hints[f.name], data[f.name], f"{where}.{f.name}".removeprefix("params.")
        if dataclasses.is_dataclass(annotation):
            values[f.name] = build_section(annotation, value, path, source)
            continue
        if not type_ok(value, annotation):
            raise type_error(source, path, value, annotation)
        if "range" in f.metadata and (error := range_error(source, path, value, *f.metadata["range"])):
            raise error
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ParamsError(f"{source}: `{path}` = {value!r}; choose one of {list(f.metadata['choices'])}")
        values[f.name] = value
    return cls(**values)


def config_type_hints(config_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # a forward reference TRL's module cannot resolve: fall back to what resolves
        return {f.name: f.type for f in dataclasses.fields(config_cls) if not isinstance(f.type, str)}
