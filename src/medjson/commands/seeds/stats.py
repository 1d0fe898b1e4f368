"""What holds across training seeds: each seed's difference between two phases on one pool of
questions, their mean, and an interval that counts both the seeds and the questions.

The interval is a two-level bootstrap. Each resample draws the seeds with replacement and,
independently, the questions with replacement (the same questions for every seed and both models,
since all answered the same pool), and takes the mean over the drawn seeds of the difference on the
drawn questions. It covers the two things a claim about a phase generalises over: another training
run and another set of questions. A t interval over the seeds' differences would count the seeds
only (every seed is measured on the same questions, so their sampling is shared and never shows in
the seeds' spread), and it has no form for the largest letter share, which is no mean over
questions. With three seeds the bootstrap sees only the seeds it was given and is narrower than the
truth: the number of seeds whose own verdict agrees stands beside it, and a claim holds across
seeds only where every seed says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from medjson.core.prompts import LETTERS
from medjson.core.scoring import stated_confidence_error

BOOTSTRAP_RESAMPLES = 2000  # a 95% percentile interval steady to about 0.002 on a rate
LARGEST_LETTER_SHARE = "largest_letter_share"
# measure -> what a lower value says: the paired measures of ``compare`` (with their own verdicts) and the
# largest share of answers naming one letter (a collapse onto one letter; lower: the answers spread).
LOWER_IS_BETTER = {"accuracy": False, "valid_json": False, "schema_pass": False, "brier_stated": True}
MEASURES = (*LOWER_IS_BETTER, LARGEST_LETTER_SHARE)
NO_CLEAR_DIFFERENCE = "no clear difference"


def question_outcomes(predictions: list[dict], ids: list[str]) -> dict[str, np.ndarray]:
    """One model's answers to the questions ``ids`` (in that order) as arrays: every measure's
    per-question value, and the letter named (-1: none), counted as ``score``'s letter shares are."""
    by_id = {p["id"]: p for p in predictions}
    rows = [by_id[i] for i in ids]
    return {
        "accuracy": np.array([float(r["correct"]) for r in rows]),
        "valid_json": np.array([float(r["valid_json"]) for r in rows]),
        "schema_pass": np.array([float(r["schema_valid"]) for r in rows]),
        "brier_stated": np.array([stated_confidence_error(r) for r in rows]),
        "letter": np.array([LETTERS.index(r["predicted"]) if r["predicted"] in LETTERS else -1 for r in rows]),
    }


def largest_letter_share(letters: np.ndarray) -> np.ndarray:
    """The largest share of answers naming one letter, along the last axis (-1, no letter, never counts)."""
    counts = np.stack([(letters == i).sum(axis=-1) for i in range(len(LETTERS))], axis=-1)
    return counts.max(axis=-1) / letters.shape[-1]


def _difference(new: np.ndarray, old: np.ndarray, measure: str) -> np.ndarray:
    """Each seed's difference (rows: seeds, columns: questions) on the measure."""
    if measure == LARGEST_LETTER_SHARE:
        return largest_letter_share(new) - largest_letter_share(old)
    return (new - old).mean(axis=-1)


@dataclass(frozen=True)
class AcrossSeeds:
    per_seed: list[float]  # each seed's difference, new minus old
    mean: float
    ci_low: float  # the two-level bootstrap's 95% percentile interval of the mean
    ci_high: float
    se: float  # the bootstrap's standard error of the mean


def across_seeds(
    new: np.ndarray, old: np.ndarray, measure: str, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> AcrossSeeds:
    """The difference new minus old on ``measure`` (arrays: one row per seed, one column per question,
    the letters for ``largest_letter_share``), per seed and averaged, with its bootstrap interval over
    seeds and questions together. One row: the interval is over the questions alone."""
    key = "letter" if measure == LARGEST_LETTER_SHARE else measure
    new, old = np.atleast_2d(new), np.atleast_2d(old)
    assert new.shape == old.shape, f"{key}: {new.shape} against {old.shape}"
    seeds, questions = new.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for b in range(resamples):
        drawn_seeds = rng.integers(seeds, size=seeds)
        drawn_questions = rng.integers(questions, size=questions)
        rows = np.ix_(drawn_seeds, drawn_questions)
        means[b] = _difference(new[rows], old[rows], measure).mean()
    per_seed = _difference(new, old, measure)
    low, high = np.percentile(means, [2.5, 97.5])
    return AcrossSeeds(
        [float(d) for d in per_seed], float(per_seed.mean()), float(low), float(high), float(means.std())
    )


def interval_verdict(low: float, high: float, lower_is_better: bool | None) -> str:
    """better/worse (or lower/higher where neither is better) when the interval excludes zero."""
    if low <= 0 <= high:
        return NO_CLEAR_DIFFERENCE
    if lower_is_better is None:
        return "lower" if high < 0 else "higher"
    return "better" if (high < 0) == lower_is_better else "worse"


def agreement(verdicts: list[str]) -> tuple[str, int]:
    """The verdict most seeds gave and how many gave it (ties: the first seed's)."""
    counts = Counter(verdicts)
    top = max(counts.values())
    verdict = next(v for v in verdicts if counts[v] == top)
    return verdict, top


@dataclass(frozen=True)
class SettingDifference:
    mean: float  # the difference of the two settings' means over their seeds
    se: float  # bootstrap over each setting's seeds and the shared questions
    ci_low: float
    ci_high: float


def setting_difference(
    scores_a: np.ndarray, scores_b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> SettingDifference:
    """Setting A's mean per-question score minus setting B's (rows: seeds, columns: the same questions),
    averaged over each setting's seeds; its interval redraws each setting's seeds on its own and the
    questions once for both (both settings answered the same pool)."""
    rng = np.random.default_rng(seed)
    questions = scores_a.shape[1]
    assert scores_b.shape[1] == questions, "both settings must be scored on the same questions"
    draws = np.empty(resamples)
    for b in range(resamples):
        drawn = rng.integers(questions, size=questions)
        a = scores_a[rng.integers(len(scores_a), size=len(scores_a))][:, drawn]
        b_ = scores_b[rng.integers(len(scores_b), size=len(scores_b))][:, drawn]
        draws[b] = a.mean() - b_.mean()
    low, high = np.percentile(draws, [2.5, 97.5])
    return SettingDifference(float(scores_a.mean() - scores_b.mean()), float(draws.std()), float(low), float(high))
