"""What every stage's ``main`` shares: logging set-up and turning known errors into clean exits."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

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
