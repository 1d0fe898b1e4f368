"""Scratch checkpoints that let an interrupted training stage resume, and only that.

They live outside every declared DVC output (``checkpoints/<stage>``), so DVC never
deletes them before a re-run. Beside them, a marker records the identity of the run that
wrote them: every parameter the stage reads, the data, the starting weights and the code
the stage runs. A re-run resumes only an unfinished run with the same identity; a
checkpoint of another run is cleared, and a finished run's checkpoints are removed when
it finishes, so a change of code or settings always trains from the start.

The stage deletes only what it can show it wrote: ``checkpoint-*`` folders in a scratch
folder that carries its marker. An existing folder without the marker is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from medjson.core.records import digest_files
from medjson.errors import StageError
from medjson.training.closure import code_digest
from medjson.training.parallel import main_process_first

log = logging.getLogger(__name__)

MARKER = "medjson_run.json"


def fingerprint(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run_identity(stage_module: str, params: dict, data: Path, start: Any) -> str:
    """What makes two training runs the same run: code, parameters, data and starting weights."""
    return fingerprint(code=code_digest(stage_module), params=params, data=digest_files([Path(data)]), start=start)


def _checkpoints(scratch: Path) -> list[Path]:
    return sorted(p for p in scratch.glob("checkpoint-*") if p.is_dir())


def _read_marker(scratch: Path) -> dict | None:
    try:
        marker = json.loads((scratch / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _clear(scratch: Path, why: str) -> None:
    checkpoints = _checkpoints(scratch)
    if checkpoints:
        log.info("clearing %d checkpoint(s) in %s: %s", len(checkpoints), scratch, why)
    for path in checkpoints:
        shutil.rmtree(path)


def resume_point(scratch: Path, identity: str) -> str | None:
    """The checkpoint to resume from (an unfinished run with this identity), or None.

    Checkpoints of any other run, or of a finished one, are cleared first.
    """
    scratch = Path(scratch)
    if scratch.exists() and not scratch.is_dir():
        raise StageError(f"--scratch {scratch} is a file, not a folder: pass a folder for training checkpoints")
    if scratch.exists() and any(scratch.iterdir()):
        marker = _read_marker(scratch)
        if marker is None:
            raise StageError(
                f"--scratch {scratch} already holds files but no {MARKER}: it was not written by this stage, "
                "so nothing in it is deleted; pass an empty or new folder"
            )
        if marker.get("identity") != identity:
            _clear(scratch, "they belong to a run with other code, settings, data or starting weights")
        elif marker.get("finished"):
            _clear(scratch, "their run finished; a finished run is never resumed")
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / MARKER).write_text(json.dumps({"identity": identity, "finished": False}) + "\n")
    last = _last_complete_checkpoint(scratch)
    if last and _reached_its_end(Path(last)):
        # Trainer would run one step past the end from such a checkpoint; the run is redone instead.
        _clear(scratch, f"{Path(last).name} is the run's last step but the run did not finish saving")
        return None
    if last:
        log.info("resuming the interrupted run from %s", last)
    return last


def _step(checkpoint: Path) -> int:
    suffix = checkpoint.name.removeprefix("checkpoint-")
    return int(suffix) if suffix.isdigit() else -1


def _trainer_state(checkpoint: Path) -> dict | None:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _last_complete_checkpoint(scratch: Path, tidy: bool = True) -> str | None:
    """The newest checkpoint that was written whole. Trainer writes ``trainer_state.json`` last, so a
    run killed while saving leaves a folder without it (or with half of it): that one is removed
    (``tidy``; the other processes of a data-parallel run only read)."""
    for checkpoint in sorted(_checkpoints(scratch), key=_step, reverse=True):
        if _trainer_state(checkpoint) is not None:
            return str(checkpoint)
        if tidy:
            log.info("removing %s: the run was stopped while saving it", checkpoint)
            shutil.rmtree(checkpoint)
    return None


def shared_resume_point(scratch: Path, identity: str) -> str | None:
    """``resume_point`` for every process of a run: the main one clears and marks the scratch folder,
    then the others read the checkpoint it left, so all of them resume from the same one."""
    return main_process_first(
        lambda: resume_point(scratch, identity), lambda: _last_complete_checkpoint(Path(scratch), tidy=False)
    )


def _reached_its_end(checkpoint: Path) -> bool:
    state = _trainer_state(checkpoint) or {}
    try:
        return state["global_step"] >= state["max_steps"] > 0
    except (KeyError, TypeError):
        return False


def mark_finished(scratch: Path, identity: str) -> None:
    """Record that the run finished and drop its checkpoints: the saved adapter is the result now."""
    scratch = Path(scratch)
    _clear(scratch, "the run finished")
    (scratch / MARKER).write_text(json.dumps({"identity": identity, "finished": True}) + "\n")
