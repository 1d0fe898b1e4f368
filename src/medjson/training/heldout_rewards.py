"""GRPO's held-out rewards: the policy's greedy answers to the held-out pool, scored by every reward.

GRPO's own ``reward`` is measured on the sampled rollouts it is trained on; these answers are
generated greedily and parsed exactly as the evaluation does, on prompts no stage trains on
(``medjson.training.heldout`` says why and how the records are kept).

With ``keep_best`` the adapter GRPO leaves is the one of the highest held-out reward, not the last:
a policy that learns and then drifts off (onto one letter, say) is taken back to where the held-out
pool, which no stage trains on, scored it best. The trainable weights of each new best are written
to a file in the stage's scratch folder, so a resumed run still has them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from medjson.training.heldout import warn_if_worsening
from medjson.training.parallel import is_main_process
from medjson.training.rewards import HELDOUT_REWARD, HELDOUT_TOP_LETTER, letter_shares, weighted_rewards

log = logging.getLogger("medjson.heldout")


def heldout_scores(texts: list[str], answers: list[str], weights: dict[str, float]) -> dict[str, float]:
    """Every reward's mean over the held-out answers, their weighted total, and the largest share of
    answers naming one letter."""
    totals, components = weighted_rewards(texts, answers, weights)
    n = max(len(texts), 1)
    return {
        HELDOUT_REWARD: sum(totals) / n,
        **{f"heldout_{name}": sum(values) / n for name, values in components.items()},
        # no schema-valid letter: not a letter the policy collapsed onto
        HELDOUT_TOP_LETTER: max(letter_shares(texts).values(), default=0.0),
    }


class HeldoutRewards(TrainerCallback):
    """GRPO: before the first step and every ``every`` optimizer steps (and at the last), the policy's
    greedy answers to the held-out prompts, scored by every reward of ``weights``.

    Written by the main process only, into the trainer's log history (so checkpoints keep them) and
    onto the curves through ``curves`` (a ``LiveCurves``). Generation is greedy, so the measurement
    itself is deterministic: the same policy always scores the same. With ``best_weights`` (a file
    path), the trainable weights of the best-scoring policy are kept there and put back into the
    model when training ends (``kept_step`` says which step's they are).
    """

    def __init__(
        self,
        tokenizer,
        records: list[dict],
        weights: dict[str, float],
        enable_thinking: bool,
        max_new_tokens: int,
        batch_size: int,
        every: int,
        curves,
        best_weights: Path | None = None,
    ):
        self.tokenizer, self.records, self.weights = tokenizer, records, weights
        self.enable_thinking, self.max_new_tokens, self.batch_size = enable_thinking, max_new_tokens, batch_size
        self.every, self.curves, self.best_weights = every, curves, best_weights
        self.history: list[dict] = []
        self.kept_step: int | None = None  # whose weights the model holds after training

    @property
    def kept(self) -> dict | None:
        """The held-out measurement of the policy the model holds after training (None before its end)."""
        return next((r for r in reversed(self.history) if r["step"] == self.kept_step), None)

    def _best(self) -> dict | None:
        """The first measurement of the highest held-out reward so far."""
        return max(self.history, key=lambda r: r[HELDOUT_REWARD], default=None)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.history = [dict(r) for r in state.log_history if HELDOUT_REWARD in r]  # resumed: the ones before
        if state.global_step == 0:
            self._measure(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._measure(state, model)

    def _measure(self, state, model) -> None:
        if not is_main_process() or not self.records:
            return
        from medjson.model.generation import generate

        was_training = model.training
        model.eval()
        try:
            run = generate(
                model,
                self.tokenizer,
                [r["messages"] for r in self.records],
                self.enable_thinking,
                batch_size=self.batch_size,
                max_new_tokens=self.max_new_tokens,
            )
        finally:
            model.train(was_training)
        record = {
            "step": state.global_step,
            **heldout_scores([o.text for o in run.outputs], self._answers(), self.weights),
        }
        state.log_history.append(record)
        best_before = self._best()
        self.history.append(record)
        new_best = best_before is None or record[HELDOUT_REWARD] > best_before[HELDOUT_REWARD]
        if self.best_weights is not None and new_best:
            _save_trainable(model, self.best_weights)  # kept, should a later policy score less
        self.curves.write(state.global_step, record)
        log.info(
            "held-out at step %d: reward %.4f (%s); top letter share %.2f",
            state.global_step,
            record[HELDOUT_REWARD],
            ", ".join(f"{name} {record[f'heldout_{name}']:.3f}" for name in self.weights),
            record[HELDOUT_TOP_LETTER],
        )
        warn_if_worsening(
            [r[HELDOUT_REWARD] for r in self.history], "reward", higher_is_better=True, step=state.global_step
        )

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.kept_step = state.global_step
        if self.best_weights is None or not is_main_process() or not self.history:
            return
        best, last = self._best(), self.history[-1]
        if last["step"] == state.global_step and last[HELDOUT_REWARD] >= best[HELDOUT_REWARD]:
            return  # the policy training ends with is the best measured (or as good)
        _load_trainable(model, self.best_weights)
        self.kept_step = best["step"]
        log.info(
            "kept the policy of step %d (held-out reward %.4f) over the last measured (step %d, %.4f)",
            best["step"],
            best[HELDOUT_REWARD],
            last["step"],
            last[HELDOUT_REWARD],
        )

    def _answers(self) -> list[str]:
        return [r["answer"] for r in self.records]


def _save_trainable(model, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    trained = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(trained, str(path))


def _load_trainable(model, path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(path))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in saved:
                p.copy_(saved[name].to(p.device, p.dtype))
