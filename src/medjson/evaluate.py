"""Stage `evaluate`: one model on the held-out questions, greedy, batched, strictly parsed.

Run once per model (``evaluate@base``, ``@sft``, ``@grpo``) on the same questions.
Writes per-question predictions, a flat metrics file, and plot data (confusion
matrix, reliability diagram, per-subject accuracy). With ``--abstention`` (the file
``calibrate`` fitted for this model on the calibration pool), it also reports the
coverage and accuracy that threshold reaches here, on questions it never saw.

    python -m medjson.evaluate --model models/sft_merged --name sft \
        --eval data/pools/eval.jsonl --out-dir evaluation/sft --metrics metrics/sft.json \
        --abstention calibration/sft/abstention.json
    python -m medjson.evaluate --base --name base ...   # the base model from params.yaml
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter, defaultdict
from pathlib import Path

from medjson.abstention import Abstention
from medjson.cli import run_stage
from medjson.grammar import DECODINGS, AnswerGrammar
from medjson.lineage import weights_digest
from medjson.params import EvaluateParams, ModelParams, load_params, log_params
from medjson.parsing import parse_answer
from medjson.prompts import LETTERS
from medjson.records import EVAL_KEYS, read_pool, write_json, write_jsonl
from medjson.stats import (
    accuracy_at_coverage,
    aurc,
    auroc,
    brier_score,
    expected_calibration_error,
    majority_accuracy,
    reliability_bins,
    risk_coverage,
    wilson_interval,
)

log = logging.getLogger("medjson.evaluate")

PARAMS_READ = ("model", "evaluate")  # the params.yaml sections this stage reads (dvc.yaml lists the same)

INVALID = "invalid"


def prediction_record(
    question: dict, output: str, new_tokens: int, letter_probs: tuple[float, ...] | None = None
) -> dict:
    parsed = parse_answer(output)
    letter_probability = None
    if not parsed.schema_valid:
        letter_probs = None
    if letter_probs is not None:
        letter_probability = letter_probs[LETTERS.index(parsed.predicted)]
    return {
        "id": question["id"],
        "subject": question["subject"],
        "gold": question["answer"],
        "raw_output": output,
        "predicted": parsed.predicted,
        "confidence": parsed.confidence,
        "reason": parsed.reason,
        "valid_json": parsed.valid_json,
        "schema_valid": parsed.schema_valid,
        "correct": parsed.schema_valid and parsed.predicted == question["answer"],
        "lenient_only": parsed.lenient_schema_valid and not parsed.schema_valid,
        "lenient_correct": parsed.lenient_predicted == question["answer"],
        "new_tokens": new_tokens,
        # The model's own probability of the letter it wrote (renormalised over A-D), from the
        # generation pass: beside the stated confidence, a second confidence to calibrate.
        "letter_probability": letter_probability,
        "letter_probs": None if letter_probs is None else list(letter_probs),  # A-D, for temperature scaling
    }


CONFIDENCE_SOURCES = ("stated", "letter")


def _confidence(prediction: dict, source: str) -> float | None:
    return prediction["confidence"] if source == "stated" else prediction["letter_probability"]


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
        if source == "letter":  # the stated ones are reported as ece/brier/calibration_n already
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
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "valid_json_rate": sum(p["valid_json"] for p in predictions) / n if n else 0.0,
        "schema_pass_rate": len(on_schema) / n if n else 0.0,
        "accuracy_on_schema": sum(outcomes) / len(on_schema) if on_schema else 0.0,
        "majority_baseline": majority_accuracy([p["gold"] for p in predictions]),
        **{f"predicted_share_{label}": predicted.get(label, 0) / n if n else 0.0 for label in (*LETTERS, INVALID)},
        "lenient_only_rate": lenient_only / n if n else 0.0,
        "lenient_only_accuracy": sum(p["lenient_only"] and p["lenient_correct"] for p in predictions) / n if n else 0.0,
        "calibration_n": len(on_schema),
        "ece": expected_calibration_error(confidences, outcomes),
        "brier": brier_score(confidences, outcomes),
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
        "abstain_letter_confidence": int(abstention.confidence == "letter"),  # 0: the stated confidence
        "abstain_temperature": abstention.temperature,
        "abstain_threshold": abstention.threshold,
        "abstain_target_accuracy": abstention.target_accuracy,
        "abstain_calibration_coverage": abstention.calibration_coverage,
        "abstain_calibration_accuracy": abstention.calibration_accuracy,
        "abstain_coverage": len(answered) / len(predictions) if predictions else 0.0,
        "abstain_accuracy": right / len(answered) if answered else None,
        "abstain_accuracy_ci_low": low if answered else None,
        "abstain_accuracy_ci_high": high if answered else None,
        "abstain_confidence_ece": expected_calibration_error(
            [p["abstention_confidence"] for p in rated], [p["correct"] for p in rated]
        )
        if rated
        else None,
    }


def plot_data(predictions: list[dict]) -> dict[str, list[dict]]:
    """Records for DVC plots: confusion (gold vs predicted), reliability bins, per-subject accuracy."""
    confusion = [{"gold": p["gold"], "predicted": p["predicted"] or INVALID} for p in predictions]
    on_schema = [p for p in predictions if p["schema_valid"]]
    reliability = [
        r
        for r in reliability_bins([p["confidence"] for p in on_schema], [p["correct"] for p in on_schema])
        if r["count"]
    ]
    by_subject: dict[str, list[bool]] = defaultdict(list)
    for p in predictions:
        by_subject[p["subject"]].append(p["correct"])
    subjects = []
    for subject, outcomes in sorted(by_subject.items()):
        low, high = wilson_interval(sum(outcomes), len(outcomes))
        subjects.append(
            {
                "subject": subject,
                "n": len(outcomes),
                "accuracy": sum(outcomes) / len(outcomes),
                "ci_low": low,
                "ci_high": high,
            }
        )
    letter_rated = [p for p in predictions if p["letter_probability"] is not None]
    letter_reliability = [
        r
        for r in reliability_bins([p["letter_probability"] for p in letter_rated], [p["correct"] for p in letter_rated])
        if r["count"]
    ]
    correct = [p["correct"] for p in predictions]
    curves = {
        f"risk_coverage_{source}": risk_coverage([_confidence(p, source) or 0.0 for p in predictions], correct)
        for source in CONFIDENCE_SOURCES
    }
    return {
        "confusion": confusion,
        "reliability": reliability,
        "reliability_letter": letter_reliability,
        "subjects": subjects,
        **curves,
    }


def evaluate_model(
    model_spec: str,
    revision: str | None,
    model_params: ModelParams,
    questions: list[dict],
    settings: EvaluateParams,
    decoding: str = "free",
) -> tuple[list[dict], dict]:
    """Generate and score; returns predictions and metrics (throughput and device included)."""
    import torch

    from medjson.generation import generate
    from medjson.modeling import device, load_model, load_tokenizer, resolve_source

    source = resolve_source(model_spec, revision)
    tokenizer = load_tokenizer(source, padding_side="left")
    model = load_model(source, model_params.precision, attn_implementation=model_params.attn_implementation).eval()
    grammar = AnswerGrammar.for_model(model, tokenizer, settings.max_new_tokens) if decoding == "constrained" else None
    run = generate(
        model,
        tokenizer,
        [q["messages"] for q in questions],
        model_params.enable_thinking,
        settings.batch_size,
        settings.max_new_tokens,
        progress="evaluate",
        grammar=grammar,
    )
    predictions = [prediction_record(q, o.text, o.new_tokens, o.letter_probs) for q, o in zip(questions, run.outputs)]
    metrics = score(predictions)
    metrics["questions_per_s"] = len(questions) / run.seconds if run.seconds else 0.0
    metrics["new_tokens_per_s"] = run.new_tokens / run.seconds if run.seconds else 0.0
    metrics["device"] = torch.cuda.get_device_name() if device() == "cuda" else "cpu"
    metrics["constrained"] = int(decoding == "constrained")
    return predictions, metrics


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model answers, under which name and decoding: the same flags for evaluate and calibrate."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a local full model folder (or hub id)")
    which.add_argument("--base", action="store_true", help="model.base from params.yaml")
    parser.add_argument("--name", required=True, help="the model's name in logs and files: base, sft, grpo, ...")
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default="free",
        help="free: what the model writes alone; constrained: masked by the answer grammar",
    )


def model_to_run(args: argparse.Namespace, model: ModelParams) -> tuple[str, str | None]:
    """The model spec and its hub revision (the pinned one for the base, none for a local folder)."""
    return (model.base, model.revision) if args.base else (args.model, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    add_model_arguments(parser)
    parser.add_argument("--eval", type=Path, default=Path("data/pools/eval.jsonl"))
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--abstention", type=Path, help="calibrate's abstention.json for this model and decoding")
    args = parser.parse_args()

    params = load_params(args.params)
    spec, revision = model_to_run(args, params.model)
    log_params(f"evaluate {args.name} ({spec}, {args.decoding} decoding)", params.view(*PARAMS_READ))
    questions = read_pool(args.eval, EVAL_KEYS, LETTERS)  # checked whole before any model loads
    if params.evaluate.limit is not None:
        questions = questions[: params.evaluate.limit]
    abstention = None
    if args.abstention:
        abstention = Abstention.read(args.abstention)
        abstention.check_unseen([q["id"] for q in questions], args.abstention)
        abstention.check_fits(spec, weights_digest(spec), args.decoding, args.abstention)
    predictions, metrics = evaluate_model(spec, revision, params.model, questions, params.evaluate, args.decoding)
    if abstention:
        metrics.update(abstention_metrics(predictions, abstention))
    write_jsonl(args.out_dir / "predictions.jsonl", predictions)
    for name, records in plot_data(predictions).items():
        write_json(args.out_dir / f"{name}.json", records)
    write_json(args.metrics, metrics)
    log.info(
        "%s: accuracy %.3f [%.3f, %.3f], valid JSON %.3f, schema %.3f, %.2f questions/s on %s",
        args.name,
        metrics["accuracy"],
        metrics["accuracy_ci_low"],
        metrics["accuracy_ci_high"],
        metrics["valid_json_rate"],
        metrics["schema_pass_rate"],
        metrics["questions_per_s"],
        metrics["device"],
    )
    if abstention:
        log.info(
            "%s: abstaining below %s answers %.1f%% here at accuracy %s (calibration pool: %.1f%% at %s; target %.2f)",
            args.name,
            _number(metrics["abstain_threshold"]),
            100 * metrics["abstain_coverage"],
            _number(metrics["abstain_accuracy"]),
            100 * metrics["abstain_calibration_coverage"],
            _number(metrics["abstain_calibration_accuracy"]),
            metrics["abstain_target_accuracy"],
        )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    run_stage(main)
