"""Settings read from a file, checked by pydantic, and its first error said the way the file spells it.

A section of ``params.yaml`` (or calibrate's abstention file) is a frozen pydantic dataclass made by
``section``: each field's type (the strict ``Int``, ``Float``, ``Str``, ``Bool`` below, or a
``Literal`` of the allowed choices), range (``Field(ge=..., le=...)``) and default are pydantic's, and
unknown keys are refused (``extra="forbid"``). ``build_section`` builds one from a mapping and turns
pydantic's first error into a ``ParamsError`` that names the file and the key (``sft.lora.r``), the
value and what to write instead. The ``trainer`` sections, which pass through to TRL's configs, are
checked against those configs' own field types with pydantic's ``TypeAdapter`` (``check_type``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import annotated_types
from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from medjson.errors import ParamsError

# Strict scalars: YAML's `"3"`, `yes` or `1.5` is not silently taken for an int or a bool. A float
# field takes an int (YAML writes 10 for 10.0), nothing else.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]

# Lax at the section level (a nested section arrives as a mapping), strict in every scalar above.
SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def section(cls: type) -> type:
    """A frozen, keyword-only pydantic dataclass: built by name, checked on every construction
    (``dataclasses.replace`` included)."""
    return pydantic_dataclass(frozen=True, kw_only=True, config=SECTION_CONFIG)(cls)


def build_section(cls: type, data: Any, where: str, source: Path | str) -> Any:
    """``cls`` built from ``data`` (the mapping at key ``where`` of ``source``), or a ``ParamsError``."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: `{where}` must be a mapping, got {type(data).__name__}")
    unknown = sorted((key for key in data if key not in _keys(cls)), key=str)
    if unknown:  # here rather than by pydantic: a key that is not a string, or a field that is no key
        raise _unknown_key(source, f"{where}.{unknown[0]}", cls)
    try:
        return cls(**data)
    except ValidationError as err:
        raise params_error(err.errors()[0], cls, where, Path(source)) from None


def _keys(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls) if not f.metadata.get("not_a_key"))


def _unknown_key(source: Path | str, path: str, cls: type) -> ParamsError:
    return ParamsError(f"{source}: unknown key `{path}`; known keys: {_keys(cls)}")


def params_error(error: dict, cls: type, where: str, source: Path) -> ParamsError:
    """One of pydantic's errors said with the file's own key path."""
    keys, owner, annotation = _locate(cls, error["loc"])
    path = ".".join([where, *map(str, keys)]).removeprefix("params.")
    kind, value = error["type"], error["input"]
    if kind == "unexpected_keyword_argument":
        return _unknown_key(source, path, owner)
    if kind == "invalid_key":  # a YAML key that is a number or a list, not a name
        return ParamsError(f"{source}: `{path}` has the key {value!r}; keys are names (strings)")
    if kind == "missing":
        return ParamsError(f"{source}: missing key `{path}`")
    if kind in ("dataclass_type", "dict_type") and not isinstance(value, dict):
        return ParamsError(f"{source}: `{path}` must be a mapping, got {type(value).__name__}")
    if kind == "finite_number":
        return ParamsError(f"{source}: `{path}` = {value!r} must be a finite number")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return out_of_range(source, path, value, *_bounds(owner, keys[-1]))
    if kind == "literal_error":
        return ParamsError(f"{source}: `{path}` = {value!r}; choose one of {list(_choices(annotation))}")
    if kind.endswith("_type"):
        return type_error(source, path, value, annotation)
    return ParamsError(f"{source}: `{path}` = {value!r}: {error['msg']}")


def _locate(cls: type, loc: tuple) -> tuple[list, type, Any]:
    """Follow pydantic's error location through the sections: the keys as the file writes them, the
    innermost section, and the annotation of the value at fault. A location part that is no key (the
    name of a union's member) ends the walk."""
    keys: list = []
    owner, annotation = cls, cls
    for part in loc:
        inner = present_type(annotation)
        if dataclasses.is_dataclass(inner) and isinstance(part, str):
            owner, annotation = inner, typing.get_type_hints(inner, include_extras=True).get(part)
            keys.append(part)
            if annotation is None:  # a key the section does not have
                break
        elif typing.get_origin(inner) in (dict, list):
            keys.append(part)
            annotation = (typing.get_args(inner) or (Any, Any))[-1]
        else:
            break
    return keys, owner, annotation


def present_type(annotation: Any) -> Any:
    """The type a present value of ``annotation`` must have: ``X | None`` -> ``X``, ``Annotated[X, ...]`` -> ``X``."""
    if typing.get_origin(annotation) is Annotated:
        return present_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return present_type(kept[0]) if len(kept) == 1 else annotation
    return annotation


def _bounds(owner: type, name: str) -> tuple[float | None, float | None]:
    low = high = None
    for constraint in owner.__pydantic_fields__[name].metadata:
        if isinstance(constraint, (annotated_types.Ge, annotated_types.Gt)):
            low = getattr(constraint, "ge", getattr(constraint, "gt", None))
        elif isinstance(constraint, (annotated_types.Le, annotated_types.Lt)):
            high = getattr(constraint, "le", getattr(constraint, "lt", None))
    return low, high


def _choices(annotation: Any) -> tuple:
    inner = present_type(annotation)
    return typing.get_args(inner) if typing.get_origin(inner) is typing.Literal else ()


def choices_of(cls: type, name: str) -> tuple | None:
    """The values a ``Literal`` field allows (None for any other field): for a command line's choices."""
    return _choices(typing.get_type_hints(cls, include_extras=True)[name]) or None


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def type_error(source: Path, path: str, value: Any, annotation: Any) -> ParamsError:
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = " (YAML read this number as a string: write floats as 2.0e-4, and numbers without quotes)"
        except ValueError:
            pass
    return ParamsError(f"{source}: `{path}` = {value!r} is not of type {_type_name(annotation)}{hint}")


@functools.cache
def _strict_adapter(annotation: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(annotation, config=ConfigDict(strict=True))
    except Exception:  # a type pydantic cannot check (an arbitrary class): its consumer checks it
        return None


def check_type(value: Any, annotation: Any, source: Path, path: str) -> None:
    """``value`` of TRL's field type ``annotation`` under pydantic's strict rules, or a ``ParamsError``."""
    adapter = _strict_adapter(annotation)
    try:
        if adapter is not None:
            adapter.validate_python(value)
    except ValidationError:
        raise type_error(source, path, value, annotation) from None


def range_error(source: Path, path: str, value: Any, low: float | None, high: float | None) -> ParamsError | None:
    """The error of a trainer value outside ``[low, high]`` (None: no bound), or None where it fits."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return ParamsError(f"{source}: `{path}` = {value!r} must be a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        return out_of_range(source, path, value, low, high)
    return None


def out_of_range(source: Path, path: str, value: Any, low: float | None, high: float | None) -> ParamsError:
    bounds = f"at least {low}" if high is None else f"between {low} and {high}"
    return ParamsError(f"{source}: `{path}` = {value!r} is out of range: it must be {bounds}")


def config_type_hints(config_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # a forward reference TRL's module cannot resolve: fall back to what resolves
        return {f.name: f.type for f in dataclasses.fields(config_cls) if not isinstance(f.type, str)}
