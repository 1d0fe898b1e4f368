"""What a training stage resolves once and passes whole: its precision, its starting model, that
model's identity, and its TRL config (its ``trainer`` section of params.yaml, passed straight through,
plus what every training stage sets itself)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
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
from medjson.params import Params, trainer_config
from medjson.training.parallel import world_size

log = logging.getLogger(__name__)


def stage_trainer_config(config_cls: type, params: Params, stage: str, scratch: Path, precision: str, **overrides):
    """``config_cls`` (``SFTConfig``, ``GRPOConfig``) from ``<stage>.trainer``, checked key by key
    (``medjson.params.trainer_config``); ``precision`` is the resolved one. The trainer's seed is the
    stage's own where it has one (``grpo.seed``), else the top-level ``seed``."""
    stage_seed = getattr(getattr(params, stage), "seed", None)  # grpo.seed; SFT has none of its own
    seed = params.seed if stage_seed is None else stage_seed
    return trainer_config(
        config_cls,
        getattr(params, stage).trainer,
        f"{stage}.trainer",
        params.path,
        output_dir=str(scratch),
        seed=seed,
        data_seed=seed,
        logging_nan_inf_filter=False,  # log a NaN loss as NaN, so FiniteGuard can stop the run
        **trainer_precision_flags(precision),
        **cpu_processes_flag(),
        **overrides,
    )


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


def set_up_training(
    params: Params, config_for: Callable[[str], Any], start: str, revision: str | None
) -> TrainingSetup:
    """Resolve precision, the TRL config (``config_for(precision)``) and the starting model once; the
    config fails on a bad key before anything loads."""
    precision = resolve_precision(params.model.precision)
    log.info("precision: %s", precision)
    config = config_for(precision)
    return TrainingSetup(params, precision, config, resolve_source(start, revision), start)
