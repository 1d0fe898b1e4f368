"""Stage `calibrate`: fit the abstention threshold of one model on the calibration pool only.

Runs once per evaluated model (``calibrate@base``, ``@sft``, ... with the same decoding as its
``evaluate``), with evaluate's generation settings. Writes the model's answers to the
calibration questions and ``abstention.json``: the confidence it stands on (stated, or the
letter probability scaled by a fitted temperature), the threshold reaching
``calibrate.target_accuracy`` there, and the ids it was fitted on. ``evaluate`` reports how
that threshold fares on the evaluation pool; ``predict`` and the service mark answers below it
as abstained.

    python -m medjson.stages.calibrate --model models/sft_merged --name sft \
        --pool data/pools/calibration.jsonl --out-dir calibration/sft
"""

from __future__ import annotations

import logging

from medjson.cli import add_model_arguments, model_to_run, run_stage, stage_parser
from medjson.core.abstention import TEMPERATURE_GRID, fit_abstention
from medjson.core.prompts import LETTERS
from medjson.core.records import EVAL_KEYS, read_pool, write_jsonl
from medjson.model.answering import Answerer
from medjson.model.lineage import weights_digest
from medjson.params import load_params, log_params

log = logging.getLogger("medjson.calibrate")

PARAMS_READ = ("model", "evaluate", "calibrate")  # the params.yaml sections this stage reads (dvc.yaml lists the same)


def main() -> None:
    parser = stage_parser(__doc__, "pool", "out_dir")
    add_model_arguments(parser)
    args = parser.parse_args()

    params = load_params(args.params)
    spec, revision = model_to_run(args, params.model)
    log_params(f"calibrate {args.name} ({spec}, {args.decoding} decoding)", params.view(*PARAMS_READ))
    questions = read_pool(args.pool, EVAL_KEYS, LETTERS)  # checked whole before any model loads
    answerer = Answerer(spec, params.model, args.decoding, params.evaluate.max_new_tokens, revision)
    predictions, _ = answerer.score_pool(questions, params.evaluate.batch_size, progress="calibrate")
    sha256 = weights_digest(answerer.source)
    abstention = fit_abstention(predictions, params.calibrate, spec, sha256, revision, args.decoding)
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
