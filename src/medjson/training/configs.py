"""What a training stage resolves once and passes whole: its paths, its precision, its starting model,
that model's identity, and its TRL config (its ``trainer`` section of params.yaml, passed straight
through, plus what the pipeline sets itself).

    setup = training_setup(params, "sft", paths.scratch, params.model.base, params.model.revision)

is the one call that builds a stage's ``SFTConfig``/``GRPOConfig``, from params already checked.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from medjson.model.lineage import base_identity
from medjson.model.modeling import (
    ModelSource,
    load_model,
    load_tokenizer,
    resolve_precision,
    resolve_source,
    trainer_precision_flags,
)
from medjson.params import Params, check_trainer_section, load_params, log_params, trainer_config
from medjson.training.parallel import add_processes_argument, is_main_process, launch_if_needed, world_size

log = logging.getLogger(__name__)

TRAINING_STAGES = ("sft", "grpo")
CONFIG_CLASSES = {"sft": "SFTConfig", "grpo": "GRPOConfig"}  # trl's config of each training stage


@dataclass(frozen=True)
class TrainingPaths:
    """Every path a training stage reads and writes, as dvc.yaml's command passes them."""

    train: Path  # the pool trained on
    heldout: Path  # the held-out pool training is measured on
    adapter: Path  # the adapter folder written
    curves: Path  # the DVCLive folder of the curves
    scratch: Path  # checkpoints of an unfinished run (not a DVC output)
    summary: Path | None = None  # the training summary (a metrics file)
    model: Path | None = None  # GRPO: the merged SFT model it starts from

    @classmethod
    def from_args(cls, args) -> TrainingPaths:
        """The paths of a stage's parsed command line (``medjson.cli.stage_parser``'s flags)."""
        return cls(**{f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)})


def config_class(stage: str) -> type:
    import trl

    return getattr(trl, CONFIG_CLASSES[stage])


def pipeline_settings(params: Params, stage: str) -> dict[str, Any]:
    """The trainer values the pipeline sets itself, beside ``<stage>.trainer`` (which may not set them)."""
    stage_seed = getattr(getattr(params, stage), "seed", None)  # grpo.seed; SFT has none of its own
    seed = params.seed if stage_seed is None else stage_seed
    common = {
        "seed": seed,
        "data_seed": seed,
        "logging_nan_inf_filter": False,  # log a NaN loss as NaN, so FiniteGuard can stop the run
    }
    if stage == "sft":
        return common | {"completion_only_loss": True}  # the loss is on the answer: the prompt is given, not learned
    return common | {
        "reward_weights": list(params.grpo.rewards.values()),  # in params.grpo.rewards' order, as REWARDS are passed
        "chat_template_kwargs": {"enable_thinking": params.model.enable_thinking},
    }


def stage_trainer_config(params: Params, stage: str, scratch: Path, precision: str):
    """``SFTConfig``/``GRPOConfig`` from ``<stage>.trainer``, checked key by key
    (``medjson.params.trainer_config``), with the pipeline's own settings; ``precision`` is the
    resolved one. The trainer's seed is the stage's own where it has one (``grpo.seed``), else the
    top-level ``seed``."""
    return trainer_config(
        config_class(stage),
        getattr(params, stage).trainer,
        f"{stage}.trainer",
        params.path,
        output_dir=str(scratch),
        **pipeline_settings(params, stage),
        **trainer_precision_flags(precision),
        **cpu_processes_flag(),
    )


def launch_view(params: Params, stage: str) -> SimpleNamespace:
    """``<stage>.trainer`` over its config's defaults, checked as ``stage_trainer_config`` checks it,
    without building the config: the command that starts N processes runs alone, and TRL's own
    cross-field checks there would count one process, refusing a batch that N of them divide."""
    cls, section = config_class(stage), getattr(params, stage).trainer
    check_trainer_section(cls, section, f"{stage}.trainer", params.path, pipeline_settings(params, stage))
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return SimpleNamespace(**{**defaults, **section})


def cpu_processes_flag() -> dict:
    """Several processes on a machine without a GPU: the Trainer trains data-parallel over gloo only
    when told it runs on the CPU (otherwise each process would train alone, on all the data)."""
    import torch

    return {"use_cpu": True} if world_size() > 1 and not torch.cuda.is_available() else {}


@dataclass(frozen=True)
class TrainingSetup:
    params: Params
    precision: str  # resolved: bf16, fp16 or fp32
    config: Any  # the built SFTConfig or GRPOConfig: the one source of every trainer value
    source: ModelSource  # the model training starts from
    spec: str  # ... as params.yaml or the command line names it

    @cached_property
    def start(self) -> dict:
        """The starting model's identity (``medjson.model.lineage.base_identity``), recorded beside the
        adapter. It hashes a local model's weights: computed once, when first asked for."""
        return base_identity(self.source, self.spec)

    def load_tokenizer(self):
        return load_tokenizer(self.source)

    def load_model(self):
        return load_model(self.source, self.precision, attn_implementation=self.params.model.attn_implementation)


def training_setup(params: Params, stage: str, scratch: Path, start: str, revision: str | None) -> TrainingSetup:
    """Resolve precision, the stage's TRL config and its starting model (``start`` at ``revision``)
    once; the config fails on a bad key before anything loads."""
    precision = resolve_precision(params.model.precision)
    log.info("precision: %s", precision)
    config = stage_trainer_config(params, stage, scratch, precision)
    return TrainingSetup(params, precision, config, resolve_source(start, revision), start)


def start_training(
    parser, module: str, stage: str, check_launch: Callable, params_read: tuple[str, ...]
) -> tuple[Params, TrainingPaths, int]:
    """What a training stage does between its command line (``parser``, ``medjson.cli.stage_parser``'s)
    and training: params read, settings refused before any process starts (``check_launch(params,
    processes)``), ``--processes`` processes started where asked (each runs ``module`` again and
    trains; this one then exits with their status), and the resolved params (``params_read``
    sections) logged once. Returns what the stage trains with."""
    add_processes_argument(parser)
    args = parser.parse_args()
    params = load_params(args.params)
    launch_if_needed(module, args.processes, lambda: check_launch(params, args.processes))
    if is_main_process():
        log_params(stage, params.view(*params_read))
    return params, TrainingPaths.from_args(args), args.processes
