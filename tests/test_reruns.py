"""Re-runs through DVC train exactly what they should: an interrupted SFT resumes and ends at its
configured step with an unbroken curve. SFT runs in two processes here (torchrun, gloo): every rank
resumes from the same checkpoint. One process resuming, and a finished run never resumed when a
setting changes, are tested in test_training; a finished GRPO re-run through DVC in test_pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import curve_steps, dvc_output, tiny_overrides

from medjson.workspace import create_workspace, deep_update, dvc_env

pytestmark = pytest.mark.slow

STEPS, SAVE_EVERY, LOG_EVERY = 8, 4, 2  # killed after step 4, resumed for the other 4


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model, questions_path):
    overrides = deep_update(
        tiny_overrides(tiny_model, questions_path),
        {"sft": {"trainer": {"max_steps": STEPS, "save_steps": SAVE_EVERY, "logging_steps": LOG_EVERY}}},
    )
    return create_workspace(tmp_path_factory.mktemp("reruns"), {**overrides, "launch": {"processes": 2}}, git=True)


def _interrupt_when(folder, path, timeout=120):
    """Start `dvc repro sft` and kill it (and the stage under it) as soon as ``path`` exists."""
    process = subprocess.Popen(
        ["dvc", "repro", "sft"],
        cwd=folder,
        env=dvc_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # a preempted machine: no clean-up of any kind
    process.wait()


def test_interrupted_sft_resumes_and_ends_at_its_configured_step(workspace):
    # Killed once the first checkpoint is whole (one cut off mid-save is tested in test_checkpoints).
    _interrupt_when(workspace, workspace / "checkpoints/sft" / f"checkpoint-{SAVE_EVERY}" / "trainer_state.json")
    marker = json.loads((workspace / "checkpoints/sft/medjson_run.json").read_text())
    assert marker["finished"] is False
    _, log = dvc_output(workspace, "repro", "sft")
    assert "launching medjson.stages.sft in 2 processes" in log
    assert log.count("resuming the interrupted run from") == 1  # the main process says it; both resume
    resumed_at = int(log.split("resuming the interrupted run from")[1].split("checkpoint-")[1].split()[0])
    assert SAVE_EVERY <= resumed_at < STEPS
    assert curve_steps(workspace / "training/sft", "loss") == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert (workspace / "models/sft_adapter/adapter_model.safetensors").exists()
    assert json.loads((workspace / "checkpoints/sft/medjson_run.json").read_text())["finished"] is True
