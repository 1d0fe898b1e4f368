"""What every stage's ``main`` shares: logging set-up, turning known errors into clean exits, and the
flags of the stages that score a model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from medjson.core.choices import DECODINGS, FREE
from medjson.errors import MedjsonError

log = logging.getLogger("medjson")


def setup_logging() -> None:
    level = os.environ.get("MEDJSON_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; an expected failure (bad data, bad params, a guard) ends with one clear line, exit 1."""
    setup_logging()
    try:
        main()
    except (MedjsonError, FileNotFoundError) as err:
        log.error("%s", err)
        sys.exit(1)


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
