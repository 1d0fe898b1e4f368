"""What every stage's ``main`` shares: logging set-up and turning known errors into clean exits."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

log = logging.getLogger("medjson")


def setup_logging() -> None:
    level = os.environ.get("MEDJSON_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; an expected failure (bad data, bad params, a guard) ends with one clear line, exit 1."""
    from medjson.params import ParamsError
    from medjson.sources import DataError

    setup_logging()
    try:
        main()
    except (ParamsError, DataError, FileNotFoundError, StageError) as err:
        log.error("%s", err)
        sys.exit(1)


class StageError(RuntimeError):
    """A stage stopped on purpose: a guard tripped or an input is not what the stage needs."""
