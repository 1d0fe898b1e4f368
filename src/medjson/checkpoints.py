"""Scratch checkpoints that let an interrupted training stage resume instead of starting over.

They live outside every declared DVC output (``checkpoints/<stage>``), so DVC never
deletes them before a re-run. A fingerprint of everything that shapes the run is
stored beside them: a checkpoint from a run with other settings or data is cleared,
never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FINGERPRINT = "medjson_run.json"


def fingerprint(**parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resume_point(scratch: Path, run_fingerprint: str) -> str | None:
    """The checkpoint to resume from, or None; stale scratch from another run is removed."""
    from transformers.trainer_utils import get_last_checkpoint

    marker = scratch / FINGERPRINT
    if scratch.exists():
        same_run = marker.exists() and json.loads(marker.read_text()).get("fingerprint") == run_fingerprint
        if not same_run:
            log.info("clearing %s: its checkpoints belong to a run with other settings or data", scratch)
            shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": run_fingerprint}) + "\n")
    last = get_last_checkpoint(str(scratch))
    if last:
        log.info("resuming from %s", last)
    return last
