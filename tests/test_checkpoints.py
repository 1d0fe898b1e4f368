"""Scratch checkpoints: resumed only for an unfinished run of the same identity; nothing foreign deleted."""

from __future__ import annotations

import json

import pytest

from medjson.errors import StageError
from medjson.training.checkpoints import MARKER, mark_finished, resume_point


def _checkpoint(scratch, step, max_steps=10):
    folder = scratch / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    return folder


def _marker(scratch, identity, finished=False):
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / MARKER).write_text(json.dumps({"identity": identity, "finished": finished}))


def test_a_folder_without_the_marker_is_refused_and_left_whole(tmp_path):
    scratch = tmp_path / "mine"
    scratch.mkdir()
    (scratch / "thesis.tex").write_text("years of work")
    _checkpoint(scratch, 5)
    with pytest.raises(StageError, match=f"no {MARKER}.*nothing in it is deleted"):
        resume_point(scratch, "run-a")
    assert (scratch / "thesis.tex").read_text() == "years of work" and (scratch / "checkpoint-5").exists()


def test_a_file_as_scratch_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StageError, match="is a file"):
        resume_point(tmp_path / "file", "run-a")


def test_an_unfinished_run_of_the_same_identity_resumes_from_its_last_checkpoint(tmp_path):
    _marker(tmp_path / "s", "run-a")
    _checkpoint(tmp_path / "s", 3)
    _checkpoint(tmp_path / "s", 6)
    assert resume_point(tmp_path / "s", "run-a").endswith("checkpoint-6")


@pytest.mark.parametrize(
    "identity, finished, step",
    [("run-b", False, 6), ("run-a", True, 6), ("run-a", False, 10)],
    ids=["another identity", "a finished run", "a checkpoint at the run's last step"],
)
def test_checkpoints_that_must_not_resume_are_cleared_and_nothing_else(tmp_path, identity, finished, step):
    scratch = tmp_path / "s"
    _marker(scratch, identity, finished)
    _checkpoint(scratch, step)
    (scratch / "notes.txt").write_text("kept")
    assert resume_point(scratch, "run-a") is None
    assert not list(scratch.glob("checkpoint-*")) and (scratch / "notes.txt").exists()
    assert json.loads((scratch / MARKER).read_text()) == {"identity": "run-a", "finished": False}


def test_a_finished_run_drops_its_checkpoints(tmp_path):
    _marker(tmp_path / "s", "run-a")
    _checkpoint(tmp_path / "s", 10)
    mark_finished(tmp_path / "s", "run-a")
    assert not list((tmp_path / "s").glob("checkpoint-*"))
    assert json.loads((tmp_path / "s" / MARKER).read_text())["finished"] is True


def test_a_checkpoint_cut_off_while_saving_is_removed_and_the_one_before_resumed(tmp_path):
    scratch = tmp_path / "s"
    _marker(scratch, "run-a")
    _checkpoint(scratch, 5)
    (scratch / "checkpoint-10").mkdir()  # killed before trainer_state.json was written
    (scratch / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"half")
    _checkpoint(scratch, 15)
    (scratch / "checkpoint-15" / "trainer_state.json").write_text('{"global_step": 1')  # killed mid-write
    assert resume_point(scratch, "run-a").endswith("checkpoint-5")
    assert not (scratch / "checkpoint-15").exists() and not (scratch / "checkpoint-10").exists()
