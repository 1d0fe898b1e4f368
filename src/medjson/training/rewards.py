"""GRPO reward functions: pure, one signature, chosen by name from ``REWARDS``.

Each reads completions with ``medjson.core.parsing.parse_answer``, the same parser the
evaluation uses, so a reward and the metric it stands for cannot disagree. TRL calls
them with the completions and every dataset column as keyword arguments; the gold
letter arrives as ``answer``.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Callable

from medjson.core.parsing import ParsedAnswer, parse_answer
from medjson.errors import ParamsError


def completion_text(completion) -> str:
    """The text of one completion, conversational (list of messages) or plain."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return completion if isinstance(completion, str) else ""


def _parsed(completions) -> list[ParsedAnswer]:
    return [parse_answer(completion_text(c)) for c in completions]


def valid_json(completions, **kwargs) -> list[float]:
    """1 when the whole completion is one JSON object."""
    return [float(p.valid_json) for p in _parsed(completions)]


def valid_schema(completions, **kwargs) -> list[float]:
    """1 when that object has exactly the schema's keys, types and ranges."""
    return [float(p.schema_valid) for p in _parsed(completions)]


def correct_answer(completions, answer, **kwargs) -> list[float]:
    """1 when a schema-valid answer names the gold letter."""
    return [float(p.schema_valid and p.predicted == gold) for p, gold in zip(_parsed(completions), answer, strict=True)]


def calibration(completions, answer, **kwargs) -> list[float]:
    """1 minus the Brier error of the stated confidence; 0 for an answer that is not schema-valid.

    Rewards saying 0.9 when right and 0.3 when wrong, so the confidence field comes
    to carry information instead of echoing what SFT showed.
    """
    rewards = []
    for parsed, gold in zip(_parsed(completions), answer, strict=True):
        if not parsed.schema_valid:
            rewards.append(0.0)
            continue
        outcome = 1.0 if parsed.predicted == gold else 0.0
        rewards.append(1.0 - (parsed.confidence - outcome) ** 2)
    return rewards


def letter_balance(completions, **kwargs) -> list[float]:
    """1 minus the share of the batch's completions that name the same letter; 0 for one naming no
    schema-valid letter.

    The one reward that looks across questions. A model that knows no medicine earns every other
    reward as well on one letter as on four, and GRPO drifts onto its commonest letter (on the
    real-data run, SFT's 85% "B" became 99%). Within a group, a completion naming a letter the batch
    names less often now scores higher, so the drift is priced; answering every question with one
    letter earns nothing, four letters evenly 0.75. TRL calls a reward once per generation batch
    of each process (``per_device_train_batch_size`` x ``steps_per_generation`` completions), so
    the shares are those of the completions sampled together there.
    """
    parsed = _parsed(completions)
    shares = _letter_shares(parsed)
    return [0.0 if p.predicted is None else 1.0 - shares[p.predicted] for p in parsed]


# The held-out measures GRPO logs as curves (``medjson.training.heldout_rewards``), named here, beside the
# rewards they total, so that readers of the curves (the seeds command) need not import the trainer.
HELDOUT_REWARD = "heldout_reward"  # the weighted total, as GRPO's own `reward` is
HELDOUT_TOP_LETTER = "heldout_top_letter_share"  # the largest predicted-letter share: collapse onto one letter


def letter_shares(completions) -> dict[str, float]:
    """Each letter's share of all the completions, counting those that name it (schema-valid ones)."""
    return _letter_shares(_parsed(completions))


def _letter_shares(parsed: list[ParsedAnswer]) -> dict[str, float]:
    counts = Counter(p.predicted for p in parsed if p.predicted is not None)
    return {letter: count / len(parsed) for letter, count in counts.items()}


REWARDS: dict[str, Callable[..., list[float]]] = {
    "valid_json": valid_json,
    "valid_schema": valid_schema,
    "correct_answer": correct_answer,
    "calibration": calibration,
    "letter_balance": letter_balance,
}


def weighted_rewards(
    texts: list[str], answers: list[str], weights: dict[str, float]
) -> tuple[list[float], dict[str, list[float]]]:
    """Each completion's weighted total over the rewards of ``weights``, and each reward's own values:
    the sum GRPO optimises, computed as TRL computes it (a weighted sum of the reward functions)."""
    components = {name: REWARDS[name](texts, answer=answers) for name in weights}
    totals = [sum(weights[name] * components[name][i] for name in weights) for i in range(len(texts))]
    return totals, components


def check_reward_weights(weights: dict[str, float], params_file: str | Path) -> None:
    """Every reward named in ``grpo.rewards`` exists, and at least one carries a positive weight."""
    for name, weight in weights.items():
        if name not in REWARDS:
            raise ParamsError(f"{params_file}: `grpo.rewards.{name}` is not a reward; known: {sorted(REWARDS)}")
        if not math.isfinite(weight) or weight < 0:
            raise ParamsError(f"{params_file}: `grpo.rewards.{name}` = {weight!r}; a weight must be a number >= 0")
    if not any(weights.values()):
        raise ParamsError(
            f"{params_file}: `grpo.rewards` gives no reward a positive weight, so GRPO would learn nothing; "
            f"name some of {sorted(REWARDS)} with weights"
        )
