"""Training in several processes: how a stage starts them, who writes, what the batch is.

``sft`` and ``grpo`` take ``--processes N`` (dvc.yaml passes ``${launch.processes}``). With one
(the default) the stage trains in its own process, as it always has. With more, it checks its
settings for that layout, then starts itself again under torchrun
(``torch.distributed.run --standalone``), one process per GPU, and TRL's trainers train
data-parallel (DDP; DeepSpeed ZeRO or FSDP through the trainer section's own ``deepspeed`` or
``fsdp`` settings). torchrun rather than ``accelerate launch``: it forms the process group on
GPUs (NCCL) and on a CPU (gloo, where the tests run two processes), while ``accelerate launch
--cpu --num_processes 2`` starts a single process; the Trainer reads torchrun's environment as
it is; and when one process fails, torchrun stops the others, so no rank is left hanging.

Every rank computes; only the main one (rank 0) writes the stage's files: the adapter (the
Trainer saves on the main process only), the lineage record, the curves, the checkpoint
marker, the training metrics and the log of resolved parameters.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
from typing import Any, Callable

from medjson.errors import ParamsError

log = logging.getLogger("medjson.parallel")


def add_processes_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="training processes, one per GPU (launch.processes in params.yaml; default: %(default)s)",
    )


def needs_launch(processes: int) -> bool:
    """Whether this is the command a user (or DVC) ran for several processes, which must start them;
    a rank torchrun started trains (and dies with torchrun). A count other than torchrun's, or
    below 1, is refused."""
    if processes < 1:
        raise ParamsError(f"--processes {processes} (launch.processes): at least 1")
    if "WORLD_SIZE" not in os.environ:
        return processes > 1
    if world_size() != processes:
        raise ParamsError(f"--processes {processes}, but torchrun started {world_size()} processes")
    _die_with_launcher()
    return False


def _die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own: killed outright (kill -9, a preempted job),
    it cannot stop them, and they would train on, orphaned, into the stage's outputs. On Linux each
    rank asks the kernel to kill it when torchrun dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # torchrun died before the request was made
        os._exit(1)


def launch_if_needed(module: str, processes: int, check: Callable[[], Any]) -> None:
    """Where this command must start ``processes`` processes (``needs_launch``): ``check()`` the settings
    first, run ``python -m module`` with this command's arguments under torchrun, and exit with its
    status (1 on any failure). Otherwise return: this process trains."""
    if not needs_launch(processes):
        return
    check()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
        "-m", module, *sys.argv[1:],
    ]  # fmt: skip
    log.info("launching %s in %d processes: %s", module, processes, " ".join(command))
    sys.exit(1 if subprocess.run(command).returncode else 0)


def world_size() -> int:
    """How many processes train together (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _process_group():
    """torch.distributed, its group formed from torchrun's environment if the Trainer has not yet
    (NCCL on GPUs, gloo on a CPU); accelerate and DeepSpeed take over a group that exists."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist


def wait_for_everyone() -> None:
    """A barrier across the training processes; nothing to wait for in one process."""
    if world_size() > 1:
        _process_group().barrier()


def main_process_first(compute: Callable[[], Any], follow: Callable[[], Any]) -> Any:
    """``compute()`` on the main process, then ``follow()`` on the others once it is done (one
    process: just ``compute()``). For work where the main process writes and the others read."""
    if world_size() == 1:
        return compute()
    result = compute() if is_main_process() else None
    wait_for_everyone()
    return result if is_main_process() else follow()


def from_main_process(compute: Callable[[], Any]) -> Any:
    """``compute()`` run once, on the main process, and its result on every process."""
    if world_size() == 1:
        return compute()
    box = [compute() if is_main_process() else None]
    _process_group().broadcast_object_list(box, src=0)
    return box[0]


def batch_layout(config, processes: int) -> dict:
    """Examples per optimizer step across every process: per device x accumulation x processes."""
    per_device, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    return {
        "processes": processes,
        "per_device_batch": per_device,
        "gradient_accumulation_steps": accumulation,
        "effective_batch": per_device * accumulation * processes,
    }


def grpo_batch_layout(config, processes: int, section: str = "grpo.trainer") -> dict:
    """GRPO's layout: completions per optimizer step and the distinct prompts they come from. Refused,
    naming the keys, where the completions of one generation round do not split into whole groups."""
    layout = batch_layout(config, processes)
    generations = config.num_generations
    # TRL generates per_device x processes x steps_per_generation completions at once, in groups of num_generations.
    steps_per_generation = config.steps_per_generation or config.gradient_accumulation_steps  # TRL's default
    round_size = config.per_device_train_batch_size * processes * steps_per_generation
    if round_size % generations:
        raise ParamsError(
            f"{section}.per_device_train_batch_size ({config.per_device_train_batch_size}) x launch.processes "
            f"({processes}) x {section}.steps_per_generation ({steps_per_generation}) = {round_size} "
            f"completions per generation round, which {section}.num_generations ({generations}) does not divide; "
            "choose values whose product it divides"
        )
    return {**layout, "num_generations": generations, "prompts_per_step": layout["effective_batch"] // generations}


def check_vllm(config, section: str = "grpo.trainer") -> None:
    """``use_vllm`` needs vLLM installed: refused before any model loads, not deep inside TRL."""
    if getattr(config, "use_vllm", False) and importlib.util.find_spec("vllm") is None:
        raise ParamsError(
            f"{section}.use_vllm is true but vLLM is not installed: `pip install vllm` (on a CUDA machine), "
            f"or set {section}.use_vllm: false to generate with transformers"
        )


def log_layout(stage: str, layout: dict) -> None:
    items = ", ".join(f"{key} {value}" for key, value in layout.items())
    log.info("%s batch: %s", stage, items)
