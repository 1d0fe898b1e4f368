"""Training curves into a per-stage DVCLive folder, without DVCLive touching dvc.yaml.

``report_to="dvclive"`` would create ``Live()`` with its defaults, which writes
``./dvclive``, clears other stages' files there and rewrites ``dvc.yaml``. This
callback owns a ``Live`` bound to the stage's folder with ``dvcyaml=None`` instead,
and steps it by the trainer's global step.

DVC deletes a stage's outputs before it runs, so a run resumed from a checkpoint would
start with an empty folder. The checkpoint's trainer state holds every point logged
before the interruption; they are written again first, so the curve has no gap.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from medjson.training.parallel import is_main_process


def _is_timing(key: str) -> bool:
    # Wall-clock figures (GRPO's step_time, runtimes, samples per second) differ on every run: on a
    # curve they would make two runs of one commit differ, and re-run whatever reads the curves.
    return key == "step_time" or key.endswith(("_runtime", "_per_second"))


def curve_points(logs: dict) -> dict[str, float]:
    """The numeric entries of one log record that belong on a curve."""
    # The end-of-training summary (train_runtime, train_loss, total_flos, ...) is not a curve point.
    return {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and k not in ("step", "total_flos")
        and not k.startswith("train_")
        and not _is_timing(k)
    }


class LiveCurves(TrainerCallback):
    """The curves, written by the main process only: in a data-parallel run the other processes log
    the same (reduced) values, and a second writer would double every row."""

    def __init__(self, folder: Path | str):
        from dvclive import Live

        self.live = Live(str(folder), dvcyaml=None, save_dvc_exp=False, report=None) if is_main_process() else None

    def write(self, step: int, logs: dict) -> None:
        """The curve points of one log record, at ``step``."""
        points = curve_points(logs)
        if not points or self.live is None:
            return
        self.live.step = step
        for key, value in points.items():
            self.live.log_metric(key.replace("/", "_"), value)
        self.live.make_summary()

    def on_train_begin(self, args, state, control, **kwargs):
        for record in state.log_history:  # empty unless resumed from a checkpoint
            self.write(record["step"], record)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.write(state.global_step, logs or {})

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.end()
