"""Reading ``params.yaml`` into typed settings, failing early on unknown or mistyped keys.

Plain sections become frozen dataclasses; the ``trainer`` sections pass straight
through to TRL's ``SFTConfig`` and ``GRPOConfig``, so a key TRL does not know fails
here, with the section named, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medjson.errors import ParamsError

log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")


@dataclass(frozen=True)
class ModelParams:
    base: str  # hub id, local folder, .gguf file, or package:<pkg>/<file>.gguf
    revision: str | None  # hub commit of the base; ignored for local paths
    precision: str  # auto | bf16 | fp16 | fp32
    enable_thinking: bool  # passed to the chat template in SFT, GRPO and evaluation alike
    attn_implementation: str  # sdpa | eager | flash_attention_2; eager overflows in fp16 on Qwen3


@dataclass(frozen=True)
class DataParams:
    source: str  # hub dataset id, or a local .json/.jsonl/.parquet file
    layout: str  # auto | hub | original: how `cop` is numbered in the source
    revision: str | None  # hub dataset revision; ignored for local files


@dataclass(frozen=True)
class PrepareParams:
    sft_size: int
    grpo_size: int
    eval_size: int | None  # None: every evaluation row
    keep_multi: bool  # keep `multi` choice-type questions
    bad_rows: str  # error | drop
    reason_max_chars: int
    confidence_explained: float
    confidence_unexplained: float


@dataclass(frozen=True)
class LoraParams:
    r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]


@dataclass(frozen=True)
class GuardParams:
    preflight_prompts: int  # prompts sampled from the SFT model before GRPO starts
    max_zero_std_logs: int  # logged steps in a row with no reward variance before stopping


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    max_new_tokens: int
    limit: int | None  # None: the whole evaluation pool


@dataclass(frozen=True)
class SftParams:
    lora: LoraParams
    trainer: dict[str, Any]  # trl.SFTConfig fields


@dataclass(frozen=True)
class GrpoParams:
    lora: LoraParams
    rewards: dict[str, float]  # reward name -> weight
    guard: GuardParams
    trainer: dict[str, Any]  # trl.GRPOConfig fields


@dataclass(frozen=True)
class Params:
    seed: int
    model: ModelParams
    data: DataParams
    prepare: PrepareParams
    sft: SftParams
    grpo: GrpoParams
    evaluate: EvaluateParams

    def view(self, *sections: str) -> dict[str, Any]:
        """The named top-level sections as plain data: what a stage logs and fingerprints.

        Both read this one validated object, so the logged parameters and the run identity
        can never drift from what the stage actually uses.
        """
        return {name: _plain(getattr(self, name)) for name in sections}


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        key_t, value_t = typing.get_args(annotation)
        return isinstance(value, dict) and all(
            _type_ok(k, key_t) and (value_t is Any or _type_ok(v, value_t)) for k, v in value.items()
        )
    if annotation is Any:
        return True
    return isinstance(value, annotation)


def _build(cls: type, data: Any, where: str, source: Path) -> Any:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: `{where}` must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamsError(f"{source}: unknown key `{where}.{unknown[0]}`; known keys: {sorted(known)}")
    missing = sorted(known - set(data))
    if missing:
        raise ParamsError(f"{source}: missing key `{where}.{missing[0]}`")
    values = {}
    for f in fields:
        annotation, value, path = hints[f.name], data[f.name], f"{where}.{f.name}"
        if dataclasses.is_dataclass(annotation):
            values[f.name] = _build(annotation, value, path, source)
        elif not _type_ok(value, annotation):
            hint = " (write floats as 2.0e-4: YAML reads 2e-4 as a string)" if isinstance(value, str) else ""
            raise ParamsError(f"{source}: `{path}` = {value!r} is not of type {annotation}{hint}")
        else:
            values[f.name] = value
    return cls(**values)


def _check_choices(params: Params, source: Path) -> None:
    choices = {
        "model.precision": (params.model.precision, {"auto", "bf16", "fp16", "fp32"}),
        "model.attn_implementation": (params.model.attn_implementation, {"sdpa", "eager", "flash_attention_2"}),
        "data.layout": (params.data.layout, {"auto", "hub", "original"}),
        "prepare.bad_rows": (params.prepare.bad_rows, {"error", "drop"}),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ParamsError(f"{source}: `{key}` = {value!r}; choose one of {sorted(allowed)}")


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate the whole parameter file."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the project root or pass --params")
    with path.open() as f:
        raw = yaml.safe_load(f)
    params = _build(Params, raw, "params", path)
    _check_choices(params, path)
    return params


def trainer_config(config_cls: type, section: dict[str, Any], where: str, **overrides: Any):
    """Build ``SFTConfig``/``GRPOConfig`` from a params section; unknown keys fail with the key named."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ParamsError(f"params.yaml: `{where}.{unknown[0]}` is not a {config_cls.__name__} field")
    clash = sorted(set(section) & set(overrides))
    if clash:
        raise ParamsError(f"params.yaml: `{where}.{clash[0]}` is set by the pipeline itself; remove it")
    return config_cls(**section, **overrides)


def log_params(stage: str, values: dict[str, Any]) -> None:
    """Log the resolved parameters a stage runs with, one line each."""
    log.info("%s parameters:", stage)
    for key, value in _flatten(values):
        log.info("  %s = %r", key, value)


def _flatten(values: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(values, dict):
        out = []
        for key, value in values.items():
            out += _flatten(value, f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), values)]
