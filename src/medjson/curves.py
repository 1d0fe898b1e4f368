"""Training curves into a per-stage DVCLive folder, without DVCLive touching dvc.yaml.

``report_to="dvclive"`` would create ``Live()`` with its defaults, which writes
``./dvclive``, clears other stages' files there and rewrites ``dvc.yaml``. This
callback owns a ``Live`` bound to the stage's folder with ``dvcyaml=None`` instead,
and steps it by the trainer's global step so a resumed run continues the same axis.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback


class LiveCurves(TrainerCallback):
    def __init__(self, folder: Path | str, resume: bool = False):
        from dvclive import Live

        self.live = Live(str(folder), dvcyaml=None, save_dvc_exp=False, resume=resume, report=None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The end-of-training summary (train_runtime, train_loss, ...) is not a curve point.
        points = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not k.startswith("train_")}
        if not points:
            return
        self.live.step = state.global_step
        for key, value in points.items():
            self.live.log_metric(key.replace("/", "_"), float(value))
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        self.live.end()
