"""The statistics the evaluation reports: intervals, paired tests and calibration. Pure functions.

The distributions and tests are scipy's (binomial test, Wilson interval, Student t, Mann-Whitney U);
what no library ships is here: Newcombe's paired interval, the verdict that needs the interval and
the test to agree, and the calibration and selective-answering measures.

- Wilson interval for an accuracy (honest near 0 and 1, unlike the normal one);
- paired accuracy difference with Newcombe's hybrid score interval (never zero-width, and
  unlike a normal interval it does not claim a gain from four discordant pairs in 50);
- exact two-sided McNemar test on the discordant pairs, and a verdict that needs both;
- paired difference of two models' mean per-question losses (the Brier score's squared errors)
  with a Student t interval and test: the Diebold-Mariano comparison for independent questions;
- expected calibration error over equal-width bins, and the Brier score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache


@cache
def _scipy_stats():
    """scipy.stats, imported at first use: the import costs a process about a second, and most of the
    processes that import this module (predict, the service, prepare) never compute an interval."""
    import scipy.stats

    return scipy.stats


def majority_accuracy(labels: list[str]) -> float:
    """Accuracy of always answering the most common label: the floor to beat, not 25%."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return max(counts.values()) / len(labels) if labels else 0.0


@cache  # a pure function of a few small integers, asked again for every measure and pair of models
def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) when there is no data."""
    if n == 0:
        return 0.0, 1.0
    interval = _scipy_stats().binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    # At 0 or n successes one bound is exactly 0 or 1; rounding must not put it above or below the estimate.
    low = 0.0 if successes == 0 else max(0.0, float(interval.low))
    high = 1.0 if successes == n else min(1.0, float(interval.high))
    return low, high


# The verdicts of a paired comparison: a difference is called only when the interval and the
# exact test both see it; when they disagree (a score interval is less conservative than an
# exact test on a handful of discordant pairs), the report says so rather than pick one.
BETTER, WORSE, NO_CLEAR_DIFFERENCE, UNSETTLED = "better", "worse", "no clear difference", "unsettled"


@dataclass(frozen=True)
class PairedComparison:
    """Two models' rates of one yes/no outcome (right, valid JSON, schema-valid) on the same questions."""

    n: int
    diff: float  # new rate minus old rate
    ci_low: float  # Newcombe's hybrid score interval (method 10), 95%
    ci_high: float
    new_only: int  # discordant pairs in favour of the new model
    old_only: int
    p: float  # exact McNemar
    verdict: str  # BETTER / WORSE: interval and test agree there is a difference; UNSETTLED: they disagree


@dataclass(frozen=True)
class PairedLossComparison:
    """Two models' mean per-question losses in [0, 1] (lower is better) on the same questions."""

    n: int
    diff: float  # new mean loss minus old: negative is better
    ci_low: float  # Student t interval of the mean paired difference, 95%
    ci_high: float
    t: float | None  # None where the differences have no spread to divide by
    p: float  # two-sided paired t-test
    verdict: str  # BETTER: a lower loss by both; WORSE: a higher one


def mcnemar_exact(new_only: int, old_only: int) -> float:
    """Exact two-sided McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    discordant = new_only + old_only
    if discordant == 0:
        return 1.0
    return float(_scipy_stats().binomtest(new_only, discordant, 0.5).pvalue)


def newcombe_paired_interval(
    both: int, new_only: int, old_only: int, neither: int, level: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for a difference of paired proportions (method 10).

    Newcombe RG (1998), "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Statistics in Medicine 17:2635-2650. It squares and adds
    the Wilson intervals of the two accuracies, corrected for their correlation (phi, shrunk
    towards zero by n/2 as the paper prescribes). Unlike the normal interval on per-question
    differences it is never zero-width and stays honest with few discordant pairs.
    """
    n = both + new_only + old_only + neither
    if n == 0:
        return -1.0, 1.0
    new_right, old_right = both + new_only, both + old_only
    p_new, p_old = new_right / n, old_right / n
    new_low, new_high = wilson_interval(new_right, n, level)
    old_low, old_high = wilson_interval(old_right, n, level)
    margins = new_right * (n - new_right) * old_right * (n - old_right)
    cross = both * neither - new_only * old_only
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > n / 2 else cross) / math.sqrt(margins)
    diff = p_new - p_old
    below = (p_new - new_low) ** 2 - 2 * phi * (p_new - new_low) * (old_high - p_old) + (old_high - p_old) ** 2
    above = (p_old - old_low) ** 2 - 2 * phi * (p_old - old_low) * (new_high - p_new) + (new_high - p_new) ** 2
    return max(-1.0, diff - math.sqrt(below)), min(1.0, diff + math.sqrt(above))


def paired_verdict(ci_low: float, ci_high: float, p: float, alpha: float = 0.05, higher_is_better: bool = True) -> str:
    """BETTER or WORSE where both the interval and the test find a difference, NO_CLEAR_DIFFERENCE
    where neither does, UNSETTLED where they disagree."""
    interval_sees = ci_low > 0 or ci_high < 0
    test_sees = p < alpha
    if interval_sees and test_sees:
        return BETTER if (ci_low > 0) == higher_is_better else WORSE
    return NO_CLEAR_DIFFERENCE if not (interval_sees or test_sees) else UNSETTLED


def paired_comparison(new_correct: list[bool], old_correct: list[bool], level: float = 0.95) -> PairedComparison:
    """Difference of two models' rates of a yes/no outcome on the same questions (accuracy: ``correct``),
    with a 95% interval, McNemar p and a verdict."""
    if len(new_correct) != len(old_correct):
        raise ValueError(f"paired comparison needs the same questions: {len(new_correct)} vs {len(old_correct)}")
    n = len(new_correct)
    both = sum(1 for a, b in zip(new_correct, old_correct) if a and b)
    new_only = sum(1 for a, b in zip(new_correct, old_correct) if a and not b)
    old_only = sum(1 for a, b in zip(new_correct, old_correct) if b and not a)
    low, high = newcombe_paired_interval(both, new_only, old_only, n - both - new_only - old_only, level)
    p = mcnemar_exact(new_only, old_only)
    diff = (new_only - old_only) / n if n else 0.0
    return PairedComparison(n, diff, low, high, new_only, old_only, p, paired_verdict(low, high, p))


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    return float(2.0 * _scipy_stats().t.sf(abs(t), df))


def student_t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t."""
    return float(_scipy_stats().t.ppf(probability, df))


def paired_loss_comparison(new_losses: list[float], old_losses: list[float]) -> PairedLossComparison:
    """Difference of two models' mean per-question losses on the same questions, with a 95% Student t
    interval, the paired t-test and a verdict (lower is better).

    For a mean score such as Brier's, this is the Diebold-Mariano test of equal predictive accuracy
    (Diebold & Mariano 1995, J. Business & Economic Statistics 13:253-263) on independent questions:
    a t-test of the mean per-question loss difference. It tests the mean, which is what the score is;
    a rank test (Wilcoxon) tests a median shift instead and can disagree in sign with the scores'
    difference. With n in the tens or more, the mean of bounded differences is close to normal.
    Fewer than two questions: no interval to speak of, so the widest possible one, [-1, 1], and p = 1.
    Every question moved by the same amount: that amount, with no spread (p = 1 when it is zero).
    """
    if len(new_losses) != len(old_losses):
        raise ValueError(f"paired comparison needs the same questions: {len(new_losses)} vs {len(old_losses)}")
    n = len(new_losses)
    differences = [a - b for a, b in zip(new_losses, old_losses)]
    mean = sum(differences) / n if n else 0.0
    if n < 2:
        return PairedLossComparison(n, mean, -1.0, 1.0, None, 1.0, NO_CLEAR_DIFFERENCE)
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    standard_error = math.sqrt(variance / n)
    if standard_error == 0.0:  # every question moved by the same amount, or none moved
        p = 1.0 if mean == 0 else 0.0
        return PairedLossComparison(n, mean, mean, mean, None, p, paired_verdict(mean, mean, p, higher_is_better=False))
    t = mean / standard_error
    half = student_t_quantile(0.975, n - 1) * standard_error
    p = student_t_two_sided_p(t, n - 1)
    low, high = mean - half, mean + half
    return PairedLossComparison(n, mean, low, high, t, p, paired_verdict(low, high, p, higher_is_better=False))


def reliability_bins(confidences: list[float], correct: list[bool], bins: int = 10) -> list[dict]:
    """Per equal-width confidence bin: count, mean confidence, accuracy. Bin 0 also holds 0.0."""
    rows = [{"bin": i, "count": 0, "confidence_sum": 0.0, "correct": 0} for i in range(bins)]
    for confidence, right in zip(confidences, correct, strict=True):
        index = min(bins - 1, max(0, math.ceil(confidence * bins) - 1))
        rows[index]["count"] += 1
        rows[index]["confidence_sum"] += confidence
        rows[index]["correct"] += int(right)
    return [
        {
            "bin": r["bin"],
            "bin_low": r["bin"] / bins,
            "bin_high": (r["bin"] + 1) / bins,
            "count": r["count"],
            "confidence": r["confidence_sum"] / r["count"] if r["count"] else None,
            "accuracy": r["correct"] / r["count"] if r["count"] else None,
        }
        for r in rows
    ]


def expected_calibration_error(confidences: list[float], correct: list[bool], bins: int = 10) -> float:
    """Count-weighted mean gap between confidence and accuracy over the bins; 0 with no data."""
    total = len(confidences)
    if total == 0:
        return 0.0
    return sum(
        r["count"] / total * abs(r["confidence"] - r["accuracy"])
        for r in reliability_bins(confidences, correct, bins)
        if r["count"]
    )


def brier_score(confidences: list[float], correct: list[bool]) -> float:
    """Mean squared gap between stated confidence and the 0/1 outcome; 0 with no data."""
    if not confidences:
        return 0.0
    return sum((c - int(r)) ** 2 for c, r in zip(confidences, correct, strict=True)) / len(confidences)


def auroc(scores: list[float], correct: list[bool]) -> float | None:
    """Probability that a right answer scores above a wrong one (ties count half); None with one class.

    How well a confidence tells right from wrong answers: 0.5 is no better than chance.
    """
    positives = [s for s, right in zip(scores, correct, strict=True) if right]
    negatives = [s for s, right in zip(scores, correct) if not right]
    if not positives or not negatives:
        return None
    # The Mann-Whitney U of the right answers' scores against the wrong ones' (average ranks for ties).
    return float(_scipy_stats().mannwhitneyu(positives, negatives).statistic) / (len(positives) * len(negatives))


def risk_coverage(confidences: list[float], correct: list[bool]) -> list[dict]:
    """Answering only at or above each confidence threshold: the share kept and their accuracy.

    One point per distinct confidence, highest first; answers with equal confidence are kept
    or dropped together, since no threshold can separate them.
    """
    n = len(confidences)
    pairs = sorted(zip(confidences, correct, strict=True), key=lambda p: -p[0])
    points, kept, right = [], 0, 0
    for index, (confidence, is_right) in enumerate(pairs):
        kept, right = kept + 1, right + int(is_right)
        if index + 1 == n or pairs[index + 1][0] != confidence:
            points.append({"threshold": confidence, "coverage": kept / n, "accuracy": right / kept})
    return points


def aurc(confidences: list[float], correct: list[bool]) -> float | None:
    """Area under the risk-coverage curve (risk = 1 - accuracy of the answers kept); lower is better.

    The curve is a step over coverage: each group of equal confidence holds its risk over the
    coverage it adds. With all confidences distinct this is the mean over k of the risk of the
    k most confident answers. None with no answers.
    """
    points = risk_coverage(confidences, correct)
    area, covered = 0.0, 0.0
    for point in points:
        area += (point["coverage"] - covered) * (1 - point["accuracy"])
        covered = point["coverage"]
    return area if points else None


def accuracy_at_coverage(confidences: list[float], correct: list[bool], coverage: float) -> float | None:
    """Accuracy of the most confident answers that cover at least ``coverage`` of all (ties kept together)."""
    for point in risk_coverage(confidences, correct):
        if point["coverage"] >= coverage - 1e-12:
            return point["accuracy"]
    return None
