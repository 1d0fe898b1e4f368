"""Reading ``params.yaml`` into typed settings, failing early on unknown, mistyped or out-of-range keys.

Plain sections are frozen pydantic dataclasses (``core/validation.section``) whose fields carry
their type, range (``Field(ge=..., le=...)``) and choices (``Literal``), checked on load; the
``trainer`` sections pass straight through to TRL's ``SFTConfig`` and ``GRPOConfig``, checked
against those configs' own field types (and the ranges below) before any model is loaded, with the
file and key named.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from medjson.core.choices import (
    ACCESS_LOGS,
    ANSWER_CONFIDENCES,
    ATTENTIONS,
    AUTO_CONFIDENCE,
    AUTO_DECODER,
    AUTO_LAYOUT,
    BAD_ROWS,
    CONFIDENCE_SOURCES,
    DECODERS,
    DECODINGS,
    HARNESS_TASKS,
    LAYOUTS,
    PRECISIONS,
)
from medjson.core.validation import (
    Bool,
    Float,
    Int,
    Str,
    build_section,
    check_type,
    config_type_hints,
    range_error,
    section,
)
from medjson.errors import ParamsError

log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")


@section
class ModelParams:
    base: Str  # hub id, local folder, .gguf file, or package:<pkg>/<file>.gguf
    revision: Str | None  # hub commit of the base; ignored for local paths
    precision: Literal[("auto", *PRECISIONS)]  # auto: bf16 where the GPU has it, fp16 on a T4, fp32 on CPU
    enable_thinking: Bool  # passed to the chat template in SFT, GRPO and evaluation alike
    # eager attention overflows to NaN in fp16 on Qwen3; sdpa does not
    attn_implementation: Literal[(*ATTENTIONS,)]
    decoder: Literal[(*DECODERS,)] = AUTO_DECODER  # greedy answers' decoder (core/choices.DECODERS)


@section
class DataParams:
    source: Str  # hub dataset id, or a local .json/.jsonl/.parquet file
    # auto | MedMCQA: hub (cop 0..3), original (cop 1..4) | medqa, medqa_hub, mmlu, mmlu_hub, columns
    layout: Literal[(AUTO_LAYOUT, *LAYOUTS)]
    revision: Str | None  # hub dataset revision; ignored for local files
    columns: dict | None  # with layout: columns, where the question's parts sit (layouts.ColumnMapping)


@section
class BenchmarkParams:
    """One entry of the ``benchmarks`` section: a question set every model is also scored on."""

    source: Str  # hub dataset id, or a local .json/.jsonl/.csv/.parquet file
    layout: Literal[(AUTO_LAYOUT, *LAYOUTS)] = AUTO_LAYOUT
    bad_rows: Literal[(*BAD_ROWS,)] = "error"
    # Optional: left out, each is null.
    split: Str | None = None  # hub split (test, validation, ...); ignored for local files
    subsets: list[Str] | None = None  # hub subsets (configurations) read in turn; None: the default
    revision: Str | None = None  # hub dataset revision; None: the default branch
    limit: Int | None = Field(default=None, ge=1)  # the first this many questions of the source; None: all
    columns: dict | None = None  # with layout: columns, where the question's parts sit
    # The lm-evaluation-harness task whose zero-shot prompt loglik_accuracy uses; None: the layout's own.
    harness_task: Literal[(*HARNESS_TASKS,)] | None = None


@section
class PrepareParams:
    sft_size: Int = Field(ge=1)
    grpo_size: Int = Field(ge=1)
    calibration_size: Int = Field(ge=1)  # questions the abstention threshold is fitted on, in no other pool
    heldout_size: Int = Field(ge=1)  # questions training watches (SFT's held-out loss, GRPO's held-out rewards)
    eval_size: Int | None = Field(ge=1)  # None: every evaluation row
    allow_short_pools: Bool  # a pool smaller than asked: an error, or (true) a loud line in the report
    keep_multi: Bool  # keep `multi` choice-type questions
    bad_rows: Literal[(*BAD_ROWS,)]
    max_dropped_share: Float = Field(ge=0.0, le=1.0)  # with bad_rows: drop, more than this share dropped is an error
    reason_max_chars: Int = Field(ge=0)
    confidence_explained: Float = Field(ge=0.0, le=1.0)
    confidence_unexplained: Float = Field(ge=0.0, le=1.0)


@section
class LoraParams:
    r: Int = Field(ge=1)
    lora_alpha: Int = Field(ge=1)
    lora_dropout: Float = Field(ge=0.0, le=0.99)
    target_modules: list[Str]


@section
class GuardParams:
    preflight_prompts: Int = Field(ge=0)  # prompts sampled from the SFT model before GRPO starts
    max_zero_std_logs: Int = Field(ge=1)  # logged steps in a row with no reward variance before stopping


@section
class GrpoHeldoutParams:
    eval_steps: Int = Field(ge=1)  # greedy answers to the held-out pool every this many optimizer steps
    batch_size: Int = Field(ge=1)  # held-out prompts generated together
    keep_best: Bool  # leave the adapter of the highest held-out reward rather than the last


@section
class EvaluateParams:
    batch_size: Int = Field(ge=1)
    max_new_tokens: Int = Field(ge=1)
    limit: Int | None = Field(ge=1)  # None: the whole evaluation pool


@section
class CalibrateParams:
    target_accuracy: Float = Field(ge=0.0, le=1.0)  # the accuracy the answered questions should reach
    # auto: the better calibrated of the two on the calibration pool
    confidence: Literal[(AUTO_CONFIDENCE, *CONFIDENCE_SOURCES)]
    fit_temperature: Bool  # scale the letter probability by a temperature fitted on the calibration pool
    min_kept: Int = Field(ge=1)  # a threshold must keep at least this many calibration answers


@section
class ServeParams:
    model: Str  # what predict and the service answer with: a merged model folder, hub id or .gguf
    decoding: Literal[(*DECODINGS,)]
    # The calibrate stage's file for this model and decoding; auto: the one beside the model; None: none.
    abstention: Str | None
    confidence: Literal[(*ANSWER_CONFIDENCES,)]  # what an answer's `confidence` is (docs/use.md)
    max_new_tokens: Int = Field(ge=16)
    max_batch_size: Int = Field(ge=1)  # dynamic batching: at most this many questions per generation
    max_wait_ms: Float = Field(ge=0, le=10_000)  # ... or those that arrived this long after the first
    request_timeout_s: Float = Field(ge=0.001, le=3600)
    max_question_chars: Int = Field(ge=1)
    max_option_chars: Int = Field(ge=1)
    # The prompt's length in tokens, checked before a question queues; with max_new_tokens it must
    # fit the model's context (characters alone do not bound tokens: 3,000 CJK characters are ~9,000).
    max_prompt_tokens: Int = Field(ge=1)
    max_batch_items: Int = Field(ge=1)  # questions in one POST /v1/answer/batch
    max_body_bytes: Int = Field(ge=1024)  # a larger request body is refused (413) before it is read
    header_timeout_s: Float = Field(ge=0.1, le=3600)  # a connection whose request headers take longer is closed
    body_timeout_s: Float = Field(ge=0.1, le=3600)  # a request body that takes longer gets a 408
    # What one chat request may hold, refused before its schema is checked: messages, content parts
    # over all messages, and characters of text over all messages.
    max_chat_messages: Int = Field(ge=1)
    max_content_parts: Int = Field(ge=1)
    max_chat_chars: Int = Field(ge=1)
    host: Str
    port: Int = Field(ge=0, le=65535)
    # A keyless server answers only requests addressed to this machine (Host) from pages of this machine
    # (Origin): more hosts and origins, or "*" for any, here.
    allowed_hosts: list[Str]
    allowed_origins: list[Str]
    access_log: Literal[(*ACCESS_LOGS,)]
    # A file of API keys, one per line (with MEDJSON_API_KEYS): every route but /health then needs one.
    api_keys_file: Str | None = None


@section
class SftParams:
    lora: LoraParams
    trainer: dict[str, Any]  # trl.SFTConfig fields, checked by trainer_config


@section
class GrpoParams:
    lora: LoraParams
    rewards: dict[str, Float]  # reward name -> weight, checked by rewards.check_reward_weights
    guard: GuardParams
    heldout: GrpoHeldoutParams
    trainer: dict[str, Any]  # trl.GRPOConfig fields, checked by trainer_config
    # GRPO's own seed (LoRA init, data order, rollout sampling); None: the top-level seed. Varied alone, it
    # repeats GRPO over one SFT model, so the spread across seeds is GRPO's own (medjson.commands.seeds).
    seed: Int | None = Field(default=None, ge=0)


@section
class CardParams:
    """What the model cards (``medjson.model.card``) say of the models beyond the pipeline's own records."""

    name: Str  # the models' name: <name>-sft, <name>-grpo
    license: Str  # the hub's license id
    datasets: list[Str]  # the hub datasets the models were trained on


@section
class LaunchParams:
    # Training processes for sft and grpo (dvc.yaml passes it as --processes): 1 runs the stage as a
    # plain process; more run it data-parallel under torchrun, one process per GPU.
    processes: Int = Field(ge=1)


@section
class Params:
    seed: Int = Field(ge=0)
    model: ModelParams
    data: DataParams
    prepare: PrepareParams
    sft: SftParams
    grpo: GrpoParams
    evaluate: EvaluateParams
    calibrate: CalibrateParams
    benchmarks: dict[str, BenchmarkParams]  # name -> a question set; names become stage and folder names
    serve: ServeParams
    card: CardParams
    launch: LaunchParams
    # Where these values were read from, for messages; not a key of the file.
    path: Path = field(default=DEFAULT_PARAMS, compare=False, metadata={"not_a_key": True})

    def view(self, *sections: str) -> dict[str, Any]:
        """The named top-level sections as plain data: what a stage logs and fingerprints.

        Both read this one validated object, so the logged parameters and the run identity
        can never drift from what the stage actually uses.
        """
        return {name: _plain(getattr(self, name)) for name in sections}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


BENCHMARK_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate the whole parameter file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found (or not a file): run from the project root or pass --params")
    try:
        with path.open(encoding="utf-8") as stream:
            raw = yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path} is not readable YAML: {' '.join(str(err).split())}") from None
    params = build_section(Params, raw, "params", path)
    for name in params.benchmarks:
        if not BENCHMARK_NAME.fullmatch(str(name)):
            raise ParamsError(f"{path}: benchmark name `{name}` must be lower-case letters, digits and _")
    return dataclasses.replace(params, path=path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, as DVC makes it:
    PyYAML alone would keep the last value without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key `{key}` appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Ranges for the trainer keys this pipeline relies on; TRL checks the rest of its own fields.
TRAINER_RANGES: dict[str, tuple[float | None, float | None]] = {
    "learning_rate": (1e-12, 1.0),
    "num_train_epochs": (1e-9, None),
    "max_steps": (-1, None),
    "per_device_train_batch_size": (1, None),
    "gradient_accumulation_steps": (1, None),
    "max_length": (1, None),
    "logging_steps": (1e-9, None),
    "save_steps": (1e-9, None),
    "save_total_limit": (1, None),
    "warmup_steps": (0, None),
    "num_generations": (2, None),
    "max_completion_length": (1, None),
    "temperature": (1e-6, None),
    "beta": (0.0, None),
}


# The trainers' own hub uploads, refused: `medjson publish` uploads a model with its card and lineage.
HUB_KEYS = {"hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision"}


def trainer_config(config_cls: type, section: dict[str, Any], where: str, source: Path | str, **overrides: Any):
    """Build ``SFTConfig``/``GRPOConfig`` from a params section, after checking every key's name,
    type and range (``check_trainer_section``), so a mistake fails here, with the file and key named,
    before any model loads."""
    check_trainer_section(config_cls, section, where, source, overrides)
    try:
        return config_cls(**section, **overrides)
    except (ValueError, TypeError) as err:  # TRL's own cross-field checks
        raise ParamsError(f"{Path(source)}: `{where}` is not a valid {config_cls.__name__}: {err}") from None


def check_trainer_section(
    config_cls: type, section: dict[str, Any], where: str, source: Path | str, overrides: dict[str, Any] | None = None
) -> None:
    """Every key of a trainer section a field of ``config_cls``, of its type and in its range; none
    that uploads, and none of the keys the pipeline sets itself (``overrides``)."""
    source = Path(source)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ParamsError(f"{source}: `{where}.{unknown[0]}` is not a {config_cls.__name__} field")
    if section.get("push_to_hub") or set(section) & HUB_KEYS:
        raise ParamsError(
            f"{source}: `{where}.{sorted(set(section) & (HUB_KEYS | {'push_to_hub'}))[0]}`: training does not upload; "
            "the trainer would push an adapter without its card, lineage or abstention file. Publish the merged "
            "model with `medjson publish` (docs/use.md)"
        )
    clash = sorted(set(section) & set(overrides or {}))
    if clash:
        raise ParamsError(f"{source}: `{where}.{clash[0]}` is set by the pipeline itself; remove it")
    hints = config_type_hints(config_cls)
    for key, value in section.items():
        if key in hints:
            check_type(value, hints[key], source, f"{where}.{key}")
        if key in TRAINER_RANGES and (error := range_error(source, f"{where}.{key}", value, *TRAINER_RANGES[key])):
            raise error
    if section.get("max_steps", -1) == 0:
        raise ParamsError(f"{source}: `{where}.max_steps` = 0 trains nothing; use -1 to train by epochs")


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
