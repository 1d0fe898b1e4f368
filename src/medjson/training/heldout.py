"""What training watches on the held-out pool: SFT's held-out loss and GRPO's held-out rewards.

A phase's own training curve cannot show that it helps: SFT's loss falls on examples it has
seen, and GRPO's reward is measured on the rollouts it is being trained on. Both phases are
therefore measured every few steps on ``data/pools/heldout.jsonl``, a pool no stage trains on:
SFT's loss there (the Trainer's own evaluation), and GRPO's rewards of greedy answers, generated
and parsed exactly as the evaluation does (``medjson.training.heldout_rewards``). The records go
into the trainer's log history, so a resumed run's checkpoint carries them and the curves are
rewritten whole; a held-out figure that worsens for several evaluations running is logged as a
warning.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from medjson.training.parallel import is_main_process

log = logging.getLogger("medjson.heldout")

# Evaluations in a row that may worsen before a warning: one or two can be noise on a small pool,
# three running is a trend worth a look (overfitting SFT, a GRPO policy drifting off).
WORSENING_RUN = 3


def worsening_run(values: list[float], higher_is_better: bool) -> int:
    """How many evaluations in a row, up to the last, were worse than the one before."""
    run = 0
    for before, after in zip(values[-2::-1], values[:0:-1]):
        worse = after < before if higher_is_better else after > before
        if not worse:
            break
        run += 1
    return run


def warn_if_worsening(values: list[float], key: str, higher_is_better: bool, step: int) -> bool:
    """Log a warning when ``key`` has worsened for ``WORSENING_RUN`` evaluations running; True when it did."""
    run = worsening_run(values, higher_is_better)
    if run < WORSENING_RUN:
        return False
    direction = "fallen" if higher_is_better else "risen"
    log.warning(
        "held-out %s has %s for %d evaluations running (now %.4f at step %d, was %.4f): the phase may be "
        "overfitting or drifting; compare the curves in dvc plots before trusting the last checkpoint",
        key,
        direction,
        run,
        values[-1],
        step,
        values[-1 - run],
    )
    return True


def start_and_end(history: list[dict], key: str, name: str | None = None) -> dict[str, float | None]:
    """``<name>_start`` and ``<name>_end``: the first and last logged values of ``key`` (None if never logged)."""
    values = [record[key] for record in history if key in record]
    name = name or key
    return {f"{name}_start": values[0] if values else None, f"{name}_end": values[-1] if values else None}


class HeldoutLossWatch(TrainerCallback):
    """SFT: warns when the Trainer's held-out loss (``eval_loss``) rises for several evaluations running."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.losses = [r["eval_loss"] for r in state.log_history if "eval_loss" in r]  # resumed: the ones before

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics and is_main_process():
            self.losses.append(metrics["eval_loss"])
            warn_if_worsening(self.losses, "loss", higher_is_better=False, step=state.global_step)
