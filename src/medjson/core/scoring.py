"""Scoring answers to labelled questions: prediction records, their metrics, plot data and paired
comparisons. Pure functions over records, shared by every stage that scores a model.

A prediction record is one question's answer as ``evaluate``, ``calibrate`` and the benchmark
stages write it (``predictions.jsonl``): the gold letter, the raw output, its strict and
lenient readings, and the model's letter probabilities.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict

from medjson.core.abstention import Abstention
from medjson.core.choices import CONFIDENCE_SOURCES, EVALUATED, LETTER, STATED
from medjson.core.parsing import Answer
from medjson.core.prompts import LETTERS
from medjson.core.stats import (
    accuracy_at_coverage,
    aurc,
    auroc,
    brier_score,
    expected_calibration_error,
    majority_accuracy,
    paired_comparison,
    paired_loss_comparison,
    reliability_bins,
    risk_coverage,
    wilson_interval,
)
from medjson.errors import StageError

INVALID = "invalid"

BASE, SFT, GRPO, SFT_CONSTRAINED, GRPO_CONSTRAINED = EVALUATED
# Each training phase against the one before (what the benchmark report compares), and what the
# answer grammar adds to each trained model.
TRAINING_PAIRS = ((SFT, BASE), (GRPO, SFT), (GRPO, BASE))
PAIRS = (*TRAINING_PAIRS, (SFT_CONSTRAINED, SFT), (GRPO_CONSTRAINED, GRPO))


def prediction_record(question: dict, answer: Answer) -> dict:
    """One pool question (``id``, ``subject``, gold ``answer``) and the model's answer to it."""
    parsed = answer.parsed
    return {
        "id": question["id"],
        "subject": question["subject"],
        "gold": question["answer"],
        "raw_output": answer.text,
        "predicted": parsed.predicted,
        "confidence": parsed.confidence,
        "reason": parsed.reason,
        "valid_json": parsed.valid_json,
        "schema_valid": parsed.schema_valid,
        "correct": parsed.schema_valid and parsed.predicted == question["answer"],
        "lenient_only": parsed.lenient_schema_valid and not parsed.schema_valid,
        "lenient_correct": parsed.lenient_predicted == question["answer"],
        "new_tokens": answer.new_tokens,
        # The model's own probability of the letter it wrote (renormalised over A-D), from the
        # generation pass: beside the stated confidence, a second confidence to calibrate.
        "letter_probability": answer.letter_probability,
        "letter_probs": None if answer.letter_probs is None else list(answer.letter_probs),  # A-D, for scaling
    }


def best_letter(logliks: list[float]) -> str:
    """The letter of the highest log-likelihood, the first of equals (as the harness's argmax takes it)."""
    return LETTERS[max(range(len(LETTERS)), key=lambda i: (logliks[i], -i))]


def loglik_record(question: dict, logliks: list[float]) -> dict:
    """One pool question scored the harness's way: each letter's log-likelihood, and the highest."""
    predicted = best_letter(logliks)
    return {
        "id": question["id"],
        "gold": question["answer"],
        "logliks": dict(zip(LETTERS, logliks)),
        "predicted": predicted,
        "correct": predicted == question["answer"],
    }


def loglik_metrics(records: list[dict]) -> dict:
    """``loglik_accuracy``, the harness's ``acc``, with its 95% Wilson interval."""
    correct = sum(r["correct"] for r in records)
    low, high = wilson_interval(correct, len(records))
    return {
        "loglik_accuracy": _share(correct, len(records)),
        "loglik_accuracy_ci_low": low,
        "loglik_accuracy_ci_high": high,
    }


def stated_confidence_error(prediction: dict) -> float:
    """The squared error of the stated confidence against the 0/1 outcome; 1, the worst, for an answer
    that states none (not schema-valid). One minus GRPO's ``calibration`` reward, question by question,
    and what ``brier_stated_all`` averages: unlike ``brier`` it covers every question, so two models
    compare on the same ones."""
    if not prediction["schema_valid"]:
        return 1.0
    return (prediction["confidence"] - float(prediction["correct"])) ** 2


def _confidence(prediction: dict, source: str) -> float | None:
    return prediction["confidence"] if source == STATED else prediction["letter_probability"]


def confidence_metrics(predictions: list[dict]) -> dict:
    """Calibration and selective prediction, for the stated confidence and for the letter probability.

    Calibration (ECE, Brier) and AUROC (right vs wrong) cover the answers that carry the
    confidence. Selective prediction covers every question: an answer without a confidence
    (not schema-valid) is the first to be dropped, and counts as wrong.
    """
    out: dict = {}
    for source in CONFIDENCE_SOURCES:
        rated = [p for p in predictions if _confidence(p, source) is not None]
        values, outcomes = [_confidence(p, source) for p in rated], [p["correct"] for p in rated]
        if source == LETTER:  # the stated ones are reported as ece/brier/calibration_n already
            out.update(
                letter_calibration_n=len(rated),
                letter_ece=expected_calibration_error(values, outcomes),
                letter_brier=brier_score(values, outcomes),
            )
        everyone = [_confidence(p, source) or 0.0 for p in predictions]
        correct = [p["correct"] for p in predictions]
        out[f"auroc_{source}"] = auroc(values, outcomes)
        out[f"aurc_{source}"] = aurc(everyone, correct)
        for share in (50, 80):
            out[f"accuracy_at_{share}_coverage_{source}"] = accuracy_at_coverage(everyone, correct, share / 100)
    return out


def _share(count: int, n: int) -> float:
    return count / n if n else 0.0


def score(predictions: list[dict]) -> dict:
    """Headline metrics over per-question predictions.

    accuracy counts every question (an invalid answer is wrong); accuracy_on_schema
    counts only schema-valid answers. Lenient recoveries are reported apart.
    """
    n = len(predictions)
    correct = sum(p["correct"] for p in predictions)
    on_schema = [p for p in predictions if p["schema_valid"]]
    low, high = wilson_interval(correct, n)
    confidences = [p["confidence"] for p in on_schema]
    outcomes = [p["correct"] for p in on_schema]
    predicted = Counter(p["predicted"] or INVALID for p in predictions)
    lenient_only = sum(p["lenient_only"] for p in predictions)
    return {
        "n": n,
        "accuracy": _share(correct, n),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "valid_json_rate": _share(sum(p["valid_json"] for p in predictions), n),
        "schema_pass_rate": _share(len(on_schema), n),
        "accuracy_on_schema": sum(outcomes) / len(on_schema) if on_schema else 0.0,
        "majority_baseline": majority_accuracy([p["gold"] for p in predictions]),
        **{f"predicted_share_{label}": _share(predicted.get(label, 0), n) for label in (*LETTERS, INVALID)},
        "lenient_only_rate": _share(lenient_only, n),
        "lenient_only_accuracy": _share(sum(p["lenient_only"] and p["lenient_correct"] for p in predictions), n),
        "calibration_n": len(on_schema),
        "ece": expected_calibration_error(confidences, outcomes),
        "brier": brier_score(confidences, outcomes),
        "brier_stated_all": sum(stated_confidence_error(p) for p in predictions) / n if n else 0.0,
        **{f"gold_share_{letter}": _share(sum(p["gold"] == letter for p in predictions), n) for letter in LETTERS},
        **confidence_metrics(predictions),
    }


def abstention_metrics(predictions: list[dict], abstention: Abstention) -> dict:
    """Marks each prediction abstained or answered under the fitted threshold; returns how that
    threshold fares here (coverage, accuracy of the answered, with its interval) beside what it
    reached on the calibration pool, and the calibration of the confidence it stands on."""
    for p in predictions:
        p["abstention_confidence"] = abstention.confidence_of(p["confidence"], p["letter_probs"], p["predicted"])
        p["abstained"] = abstention.abstains(p["abstention_confidence"])
    answered = [p for p in predictions if not p["abstained"]]
    right = sum(p["correct"] for p in answered)
    low, high = wilson_interval(right, len(answered))
    rated = [p for p in predictions if p["abstention_confidence"] is not None]
    return {
        "abstain_letter_confidence": int(abstention.confidence == LETTER),  # 0: the stated confidence
        "abstain_temperature": abstention.temperature,
        "abstain_threshold": abstention.threshold,
        "abstain_target_accuracy": abstention.target_accuracy,
        "abstain_calibration_coverage": abstention.calibration_coverage,
        "abstain_calibration_accuracy": abstention.calibration_accuracy,
        "abstain_coverage": _share(len(answered), len(predictions)),
        "abstain_accuracy": right / len(answered) if answered else None,
        "abstain_accuracy_ci_low": low if answered else None,
        "abstain_accuracy_ci_high": high if answered else None,
        "abstain_confidence_ece": expected_calibration_error(
            [p["abstention_confidence"] for p in rated], [p["correct"] for p in rated]
        )
        if rated
        else None,
    }


def _reliability(confidences: list[float], correct: list[bool]) -> list[dict]:
    return [r for r in reliability_bins(confidences, correct) if r["count"]]


def plot_data(predictions: list[dict]) -> dict[str, list[dict]]:
    """Records for DVC plots: confusion (gold vs predicted), reliability bins of both confidences,
    per-subject accuracy and the risk-coverage curves."""
    on_schema = [p for p in predictions if p["schema_valid"]]
    letter_rated = [p for p in predictions if p["letter_probability"] is not None]
    by_subject: dict[str, list[bool]] = defaultdict(list)
    for p in predictions:
        by_subject[p["subject"]].append(p["correct"])
    subjects = []
    for subject, outcomes in sorted(by_subject.items()):
        low, high = wilson_interval(sum(outcomes), len(outcomes))
        accuracy = sum(outcomes) / len(outcomes)
        subjects.append({"subject": subject, "n": len(outcomes), "accuracy": accuracy, "ci_low": low, "ci_high": high})
    correct = [p["correct"] for p in predictions]
    return {
        "confusion": [{"gold": p["gold"], "predicted": p["predicted"] or INVALID} for p in predictions],
        "reliability": _reliability([p["confidence"] for p in on_schema], [p["correct"] for p in on_schema]),
        "reliability_letter": _reliability(
            [p["letter_probability"] for p in letter_rated], [p["correct"] for p in letter_rated]
        ),
        "subjects": subjects,
        **{
            f"risk_coverage_{source}": risk_coverage([_confidence(p, source) or 0.0 for p in predictions], correct)
            for source in CONFIDENCE_SOURCES
        },
    }


# What a paired comparison covers: the yes/no outcomes each phase is trained towards (a rate, compared by
# McNemar's test and Newcombe's interval), and the stated confidence's Brier error over every question.
PAIRED_RATES = {"accuracy": "correct", "valid_json": "valid_json", "schema_pass": "schema_valid"}
PAIRED_LOSS = "brier_stated"


def compare(predictions: dict[str, list[dict]], pairs: tuple[tuple[str, str], ...] = PAIRS) -> dict[str, dict]:
    """Paired comparisons for every pair, one per measure of ``PAIRED_RATES`` and ``PAIRED_LOSS``;
    the two models must have answered the same questions."""
    by_id = {}
    for name, rows in predictions.items():
        if not rows or any(not isinstance(r.get("correct"), bool) or "id" not in r for r in rows):
            raise StageError(
                f"the {name} predictions are empty or lack `id`/`correct`: re-run evaluate@{name} (dvc repro)"
            )
        by_id[name] = {r["id"]: r for r in rows}
    out = {}
    for new, old in pairs:
        if set(by_id[new]) != set(by_id[old]):
            raise StageError(f"{new} and {old} were evaluated on different questions: re-run evaluate for both")
        ids = sorted(by_id[new])
        newer, older = [by_id[new][i] for i in ids], [by_id[old][i] for i in ids]
        result: dict = {"n": len(ids)}
        for measure, key in PAIRED_RATES.items():
            compared = paired_comparison([bool(r[key]) for r in newer], [bool(r[key]) for r in older])
            result[measure] = {k: v for k, v in dataclasses.asdict(compared).items() if k != "n"}
        loss = paired_loss_comparison(
            [stated_confidence_error(r) for r in newer], [stated_confidence_error(r) for r in older]
        )
        result[PAIRED_LOSS] = {k: v for k, v in dataclasses.asdict(loss).items() if k != "n"}
        out[f"{new}_vs_{old}"] = result
    return out


MEASURE_LABELS = {
    "accuracy": "accuracy",
    "valid_json": "valid JSON",
    "schema_pass": "schema pass",
    PAIRED_LOSS: "Brier (stated)",
}


def comparison_rows(comparisons: dict[str, dict]) -> list[dict]:
    """One row per pair and measure, for the tables the report and the demo print."""
    return [
        {
            "pair": pair.replace("_vs_", " vs "),
            "measure": MEASURE_LABELS[measure],
            "test": "paired t" if measure == PAIRED_LOSS else "McNemar",
            **{k: c[measure][k] for k in ("diff", "ci_low", "ci_high", "p", "verdict")},
        }
        for pair, c in comparisons.items()
        for measure in MEASURE_LABELS
    ]
