"""What every stage's ``main`` shares: logging set-up, turning known errors into clean exits, and the
flags of the stages that score a model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from medjson.core.choices import DECODINGS, FREE
from medjson.errors import MedjsonError

log = logging.getLogger("medjson")


def setup_logging() -> None:
    level = os.environ.get("MEDJSON_LOG_LEVEL", "INFO").upper()
    if os.environ.get("RANK", "0") != "0":
        level = "WARNING"  # the other processes of a data-parallel run: their warnings and errors, no repeats
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; an expected failure (bad data, bad params, a guard) ends with one clear line, exit 1."""
    setup_logging()
    try:
        main()
    except (MedjsonError, FileNotFoundError) as err:
        log.error("%s", err)
        sys.exit(1)


# What each path a stage takes holds; the same flag means the same thing in every stage.
PATH_FLAGS = {
    "adapter": "a trained LoRA adapter folder",
    "comparison": "the paired comparisons (a metrics file)",
    "curves": "the DVCLive folder of the training curves",
    "eval": "the pool of questions to answer",
    "evaluations": "the folder of <model>/predictions.jsonl",
    "eval_metrics": "the folder of each model's metrics on the evaluation pool (<model>.json)",
    "heldout": "the held-out pool training is measured on every few steps (trained on by no stage)",
    "metrics": "a metrics file, or the folder of them",
    "model": "a local model folder",
    "out": "the file or folder written",
    "out_dir": "the folder written",
    "pool": "the pool of questions to answer",
    "pools": "the folder of the prepared pools",
    "predictions": "the folder of <benchmark>/<model>/predictions.jsonl",
    "report": "the data report (a metrics file)",
    "scratch": "checkpoints of an unfinished run (not a DVC output)",
    "speed": "the speed metrics file (questions and tokens per second, device)",
    "summary": "the training summary (a metrics file)",
    "train": "the pool to train on",
    "training": "the folder of each phase's training curves (<phase>/plots/metrics/*.tsv)",
}


def stage_parser(description: str, *paths: str, reads_params: bool = True) -> argparse.ArgumentParser:
    """A stage's command line: ``--params`` where it reads params.yaml, and one required ``--<path>``
    for each name in ``paths`` (``PATH_FLAGS``). Paths have no defaults: dvc.yaml's command passes
    every one, so the two can never drift apart."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if reads_params:
        parser.add_argument("--params", default="params.yaml", help="the parameter file (default: %(default)s)")
    for name in paths:
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=PATH_FLAGS[name])
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model answers, under which name and decoding: the same flags for every stage that scores one."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a local full model folder (or hub id)")
    which.add_argument("--base", action="store_true", help="model.base from params.yaml, at model.revision")
    parser.add_argument("--name", required=True, help="the model's name in logs and files: base, sft, grpo, ...")
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default=FREE,
        help="free: what the model writes alone; constrained: masked by the answer grammar",
    )


def model_to_run(args: argparse.Namespace, model) -> tuple[str, str | None]:
    """The model spec and its hub revision (``model``: the params.yaml section; the pinned revision for
    the base, none for a folder given with --model)."""
    return (model.base, model.revision) if args.base else (args.model, None)
