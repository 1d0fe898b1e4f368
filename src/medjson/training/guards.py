"""Stopping a training run that has gone wrong, instead of training on: numerically (``FiniteGuard``),
or for GRPO, rewards that no longer vary within any group (``GrpoMonitor``).

Trainer logs a NaN loss and carries on (and by default even hides it: the training
configs set ``logging_nan_inf_filter=False`` so the logged loss is the real one); in fp16 (a T4's precision) an overflow can turn
the loss or the gradients into inf/NaN and every later step is wasted. One exception:
with fp16 mixed precision the gradient scaler starts high and skips the first steps
whose scaled gradients overflow, logging a non-finite gradient norm for them; that is
its normal calibration, so a few such logs in a row are tolerated in fp16.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback

from medjson.errors import StageError

# Logged steps in a row with a non-finite gradient norm that fp16's gradient scaler may
# produce while it finds its scale (it halves the scale on each, from 65536).
FP16_SCALER_GRACE_LOGS = 3


class FiniteGuard(TrainerCallback):
    """Raises a ``StageError`` naming the precision as soon as the logged loss or gradient norm is not finite."""

    def __init__(self, precision: str, stage: str):
        self.precision = precision
        self.stage = stage
        self.nonfinite_grad_logs = 0

    def _fail(self, what: str, value: float, step: int) -> None:
        remedies = ["a lower learning rate", "model.attn_implementation: sdpa if it is set to eager"]
        if self.precision != "fp32":
            remedies.insert(0, "model.precision: fp32 (or bf16 on a GPU that has it)")
        raise StageError(
            f"{self.stage}: the training {what} became {value} at step {step} in {self.precision}; "
            f"training stopped and this run saved no adapter. Try {', or '.join(remedies)}"
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        loss = logs.get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            self._fail("loss", loss, state.global_step)
        grad_norm = logs.get("grad_norm")
        if not isinstance(grad_norm, (int, float)):
            return
        if math.isfinite(grad_norm):
            self.nonfinite_grad_logs = 0
            return
        self.nonfinite_grad_logs += 1
        grace = FP16_SCALER_GRACE_LOGS if self.precision == "fp16" else 0
        if self.nonfinite_grad_logs > grace:
            self._fail("gradient norm", grad_norm, state.global_step)


class GrpoMonitor(TrainerCallback):
    """Keeps the reward history and stops training once rewards stop varying for too long."""

    def __init__(self, max_zero_std_logs: int):
        self.max_zero_std_logs = max_zero_std_logs
        self.history: list[dict] = []
        self.zero_std_run = 0
        self.collapsed_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        # Resumed from a checkpoint: its trainer state holds the steps logged before the interruption.
        self.history = [dict(record) for record in state.log_history if "frac_reward_zero_std" in record]

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "frac_reward_zero_std" not in logs:
            return
        self.history.append(
            {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        )
        self.zero_std_run = self.zero_std_run + 1 if logs["frac_reward_zero_std"] >= 1.0 else 0
        if self.zero_std_run >= self.max_zero_std_logs:
            self.collapsed_at = state.global_step
            control.should_training_stop = True
