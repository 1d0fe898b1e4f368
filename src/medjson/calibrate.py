"""Stage `calibrate`: fit the abstention threshold of one model on the calibration pool only.

Runs once per evaluated model (``calibrate@base``, ``@sft``, ... with the same decoding as its
``evaluate``), with evaluate's generation settings. Writes the model's answers to the
calibration questions and ``abstention.json``: the confidence it stands on (stated, or the
letter probability scaled by a fitted temperature), the threshold reaching
``calibrate.target_accuracy`` there, and the ids it was fitted on. ``evaluate`` reports how
that threshold fares on the evaluation pool; ``predict`` and the service mark answers below it
as abstained.

    python -m medjson.calibrate --model models/sft_merged --name sft \
        --pool data/pools/calibration.jsonl --out-dir calibration/sft
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medjson.abstention import SOURCES, TEMPERATURE_GRID, Abstention, fit_temperature, fit_threshold, letter_confidence
from medjson.cli import run_stage
from medjson.evaluate import add_model_arguments, evaluate_model, model_to_run
from medjson.lineage import weights_digest
from medjson.params import CalibrateParams, load_params, log_params
from medjson.prompts import LETTERS
from medjson.records import EVAL_KEYS, read_pool, write_jsonl
from medjson.stats import expected_calibration_error

log = logging.getLogger("medjson.calibrate")

PARAMS_READ = ("model", "evaluate", "calibrate")  # the params.yaml sections this stage reads (dvc.yaml lists the same)


def fit_abstention(
    predictions: list[dict], settings: CalibrateParams, model: str, revision: str | None, decoding: str
) -> Abstention:
    """Temperature, confidence source and threshold from one model's calibration-pool answers."""
    with_letters = [p for p in predictions if p["letter_probs"] is not None]
    temperature = 1.0
    if settings.fit_temperature:
        temperature = fit_temperature(
            [p["letter_probs"] for p in with_letters], [LETTERS.index(p["gold"]) for p in with_letters]
        )
    confidences = {
        "stated": [p["confidence"] if p["schema_valid"] else None for p in predictions],
        "letter": [letter_confidence(p["letter_probs"], p["predicted"], temperature) for p in predictions],
    }
    correct = [p["correct"] for p in predictions]
    ece = {}
    for source in SOURCES:
        rated = [(c, r) for c, r in zip(confidences[source], correct) if c is not None]
        ece[source] = expected_calibration_error([c for c, _ in rated], [r for _, r in rated]) if rated else None
    source = settings.confidence
    if source == "auto":  # the better calibrated; the letter probability where neither can be measured
        measured = {name: value for name, value in ece.items() if value is not None}
        source = min(measured, key=lambda name: (measured[name], name != "letter")) if measured else "letter"
    threshold = fit_threshold(confidences[source], correct, settings.target_accuracy, settings.min_kept)
    return Abstention(
        model=model,
        model_sha256=weights_digest(model),
        revision=revision,
        decoding=decoding,
        confidence=source,
        temperature=temperature,
        threshold=threshold.value,
        target_accuracy=settings.target_accuracy,
        min_kept=settings.min_kept,
        calibration_n=len(predictions),
        calibration_coverage=threshold.coverage,
        calibration_accuracy=threshold.accuracy,
        calibration_ece=ece,
        fitted_on=[p["id"] for p in predictions],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    add_model_arguments(parser)
    parser.add_argument("--pool", type=Path, default=Path("data/pools/calibration.jsonl"))
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    spec, revision = model_to_run(args, params.model)
    log_params(f"calibrate {args.name} ({spec}, {args.decoding} decoding)", params.view(*PARAMS_READ))
    questions = read_pool(args.pool, EVAL_KEYS, LETTERS)  # checked whole before any model loads
    predictions, _ = evaluate_model(spec, revision, params.model, questions, params.evaluate, args.decoding)
    abstention = fit_abstention(predictions, params.calibrate, spec, revision, args.decoding)
    write_jsonl(args.out_dir / "predictions.jsonl", predictions)
    abstention.write(args.out_dir / "abstention.json")
    ece = ", ".join(
        f"{name} {value:.3f}" if value is not None else f"{name} -"
        for name, value in abstention.calibration_ece.items()
    )
    log.info(
        "%s: calibration ECE %s; temperature %.3g; confidence: %s",
        args.name,
        ece,
        abstention.temperature,
        abstention.confidence,
    )
    if abstention.temperature == TEMPERATURE_GRID[-1]:
        log.warning(
            "%s: the fitted temperature is the largest tried (%.0f): on this pool the letter probability tells "
            "right from wrong no better than chance, so scaling flattens it towards 1/4",
            args.name,
            abstention.temperature,
        )
    if abstention.threshold is None:
        log.warning(
            "%s: NO THRESHOLD reaches accuracy %.2f with at least %d answers kept on the %d calibration questions: "
            "every answer will be marked abstained (lower calibrate.target_accuracy or min_kept)",
            args.name,
            abstention.target_accuracy,
            abstention.min_kept,
            abstention.calibration_n,
        )
    else:
        log.info(
            "%s: threshold %.4f answers %.1f%% of the calibration questions at accuracy %.3f (target %.2f)",
            args.name,
            abstention.threshold,
            100 * abstention.calibration_coverage,
            abstention.calibration_accuracy,
            abstention.target_accuracy,
        )


if __name__ == "__main__":
    run_stage(main)
