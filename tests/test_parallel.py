"""Training in two processes on a CPU (torchrun, gloo), through DVC: one writer, twice the batch, an
interrupted SFT that every rank resumes from the same checkpoint and ends at its configured step with
an unbroken curve, and a guard in one rank that ends both. Layout checks run before any process
starts. One process resuming, and a finished run never resumed when a setting changes, are tested in
test_training; a finished GRPO re-run through DVC in test_pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import curve_steps, dvc_output, tiny_overrides

from medjson.errors import ParamsError
from medjson.workspace import create_workspace, deep_update, dvc_env

SFT_STEPS, SAVE_EVERY, GRPO_STEPS, PER_DEVICE = 8, 4, 2, 4  # SFT is killed after its checkpoint at step 4


def _overrides(tiny_model, questions_path, processes: int) -> dict:
    overrides = tiny_overrides(tiny_model, questions_path)
    # A barely trained model's rollouts may all score alike: the collapse guard is not what is tested here.
    overrides["grpo"]["guard"]["max_zero_std_logs"] = 100
    overrides = deep_update(
        overrides,
        {
            "sft": {
                "trainer": {
                    "max_steps": SFT_STEPS,
                    "save_steps": SAVE_EVERY,
                    "logging_steps": 1,
                    "per_device_train_batch_size": PER_DEVICE,
                }
            },
            "grpo": {
                "trainer": {"max_steps": GRPO_STEPS, "logging_steps": 1, "per_device_train_batch_size": PER_DEVICE},
            },
        },
    )
    return {**overrides, "launch": {"processes": processes}}


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


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tiny_model, questions_path):
    """SFT in two processes killed once its first checkpoint is whole (one cut off mid-save is tested in
    test_checkpoints), then `dvc repro grpo`: SFT resumes and ends, merge@sft, GRPO in two processes."""
    folder = create_workspace(tmp_path_factory.mktemp("parallel"), _overrides(tiny_model, questions_path, 2), git=True)
    _interrupt_when(folder, folder / "checkpoints/sft" / f"checkpoint-{SAVE_EVERY}" / "trainer_state.json")
    interrupted = json.loads((folder / "checkpoints/sft/medjson_run.json").read_text())
    stdout, log = dvc_output(folder, "repro", "grpo")
    return folder, stdout + log, interrupted


@pytest.mark.slow
def test_two_processes_train_sft_and_grpo_with_one_writer_and_twice_the_batch(two_processes):
    folder, log, _ = two_processes
    assert log.count("launching medjson.stages.sft in 2 processes") == 1
    assert log.count("launching medjson.stages.grpo in 2 processes") == 1
    # The resolved parameters are logged once (the main process), not once per rank.
    assert log.count("sft.trainer.max_steps = ") == 1 and log.count("grpo.trainer.max_steps = ") == 1
    params = yaml.safe_load((folder / "params.yaml").read_text())
    sft = json.loads((folder / "metrics/sft_training.json").read_text())
    # One process: per device x accumulation; two: twice that.
    one_process = PER_DEVICE * params["sft"]["trainer"]["gradient_accumulation_steps"]
    assert (sft["processes"], sft["effective_batch"], sft["steps"]) == (2, 2 * one_process, SFT_STEPS)
    assert f"sft batch: processes 2, per_device_batch {PER_DEVICE}" in log
    assert f"effective_batch {2 * one_process}" in log
    grpo = json.loads((folder / "metrics/grpo_training.json").read_text())
    trainer = params["grpo"]["trainer"]
    one_process = PER_DEVICE * trainer["gradient_accumulation_steps"]
    assert (grpo["processes"], grpo["effective_batch"], grpo["steps"]) == (2, 2 * one_process, GRPO_STEPS)
    assert grpo["prompts_per_step"] == 2 * one_process // trainer["num_generations"]
    # One row per logged step: a second writer would double them (and a resumed run repeat them).
    assert curve_steps(folder / "training/sft", "loss") == list(range(1, SFT_STEPS + 1))
    assert curve_steps(folder / "training/grpo", "reward") == list(range(1, GRPO_STEPS + 1))
    for stage in ("sft", "grpo"):
        adapter = folder / "models" / f"{stage}_adapter"
        assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "medjson_base.json").is_file()
        assert json.loads((folder / "checkpoints" / stage / "medjson_run.json").read_text())["finished"] is True
    # merge@sft loaded the two-process adapter onto its base; GRPO started from the merge.
    assert (folder / "models/sft_merged/medjson_lineage.json").is_file()


@pytest.mark.slow
def test_interrupted_sft_resumes_in_both_processes_and_ends_at_its_configured_step(two_processes):
    folder, log, interrupted = two_processes
    assert interrupted["finished"] is False
    assert log.count("resuming the interrupted run from") == 1  # the main process says it; both resume
    resumed_at = int(log.split("resuming the interrupted run from")[1].split("checkpoint-")[1].split()[0])
    assert SAVE_EVERY <= resumed_at < SFT_STEPS
    # Its curve, steps and adapter are those of an uninterrupted run: the test above.


@pytest.mark.slow
def test_a_guard_tripping_in_one_rank_ends_both_processes(two_processes, tmp_path):
    """A NaN in rank 1 only: its FiniteGuard raises, torchrun stops rank 0, and the run ends with exit 1."""
    folder, _, _ = two_processes
    script = tmp_path / "nan_in_rank_1.py"
    script.write_text(
        "import os, runpy, sys\n"
        "from medjson.training import guards\n"
        "original = guards.FiniteGuard.on_log\n"
        "def on_log(self, args, state, control, logs=None, **kwargs):\n"
        "    if os.environ['RANK'] == '1' and state.global_step >= 2:\n"
        "        logs = {**(logs or {}), 'loss': float('nan')}\n"
        "    return original(self, args, state, control, logs=logs, **kwargs)\n"
        "guards.FiniteGuard.on_log = on_log\n"
        "sys.argv = ['medjson.stages.sft', *sys.argv[1:]]\n"
        "runpy.run_module('medjson.stages.sft', run_name='__main__')\n"
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
        "--train", "data/pools/sft.jsonl", "--heldout", "data/pools/heldout.jsonl",
        "--adapter", str(tmp_path / "adapter"), "--curves", str(tmp_path / "curves"),
        "--summary", str(tmp_path / "summary.json"), "--scratch", str(tmp_path / "scratch"), "--processes", "2",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "the training loss became nan at step 2" in output
    assert time.monotonic() - started < 240
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def _grpo_trainer(params, **changes):
    import dataclasses

    trainer = {**params.grpo.trainer, **changes}
    return dataclasses.replace(params, grpo=dataclasses.replace(params.grpo, trainer=trainer))


def test_a_layout_that_splits_a_group_is_refused_before_any_process_starts(tiny_params):
    from medjson.stages.grpo import check_launch

    # 3 completions per device x 2 processes = 6 per round: not whole groups of 4.
    with pytest.raises(ParamsError, match=r"per_device_train_batch_size \(3\) x launch\.processes \(2\) x"):
        check_launch(_grpo_trainer(tiny_params, per_device_train_batch_size=3, num_generations=4), 2)
    # 2 per device x 2 processes = 4: one group per round, though one process alone could not.
    layout = check_launch(_grpo_trainer(tiny_params, per_device_train_batch_size=2, num_generations=4), 2)
    assert (layout["effective_batch"], layout["prompts_per_step"]) == (4, 1)


def test_vllm_asked_for_but_absent_is_refused_before_a_model_loads(tiny_params):
    from medjson.stages.grpo import check_launch

    with pytest.raises(ParamsError, match=r"grpo\.trainer\.use_vllm is true but vLLM is not installed"):
        check_launch(_grpo_trainer(tiny_params, use_vllm=True), 2)


def test_a_process_count_below_one_or_unlike_torchruns_is_refused(monkeypatch):
    from medjson.training import parallel
    from medjson.training.parallel import needs_launch

    assert needs_launch(1) is False and needs_launch(2) is True
    with pytest.raises(ParamsError, match="at least 1"):
        needs_launch(0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    bound = []
    monkeypatch.setattr(parallel, "_die_with_launcher", lambda: bound.append(True))  # not this test process
    assert needs_launch(2) is False and bound  # a rank torchrun started: it trains, bound to torchrun
    with pytest.raises(ParamsError, match="torchrun started 2"):
        needs_launch(4)
