"""Stage `evaluate`: one model on the held-out questions, greedy, batched, strictly parsed.

Run once per model (``evaluate@base``, ``@sft``, ``@grpo``) on the same questions, and by the
benchmark stages on each benchmark's questions. Writes per-question predictions, a flat
metrics file, and plot data (confusion matrix, reliability diagram, per-subject accuracy).
With ``--abstention`` (the file ``calibrate`` fitted for this model on the calibration pool),
it also reports the coverage and accuracy that threshold reaches here, on questions it never saw.

    python -m medjson.evaluate --model models/sft_merged --name sft \
        --eval data/pools/eval.jsonl --out-dir evaluation/sft --metrics metrics/sft.json \
        --abstention calibration/sft/abstention.json
    python -m medjson.evaluate --base --name base ...   # the base model from params.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path

from medjson.cli import add_model_arguments, model_to_run, run_stage, stage_parser
from medjson.core.abstention import Abstention
from medjson.core.choices import CONSTRAINED
from medjson.core.prompts import LETTERS
from medjson.core.records import EVAL_KEYS, read_pool, write_json, write_jsonl
from medjson.core.scoring import abstention_metrics, plot_data, score
from medjson.model.answering import Answerer
from medjson.model.modeling import device_name
from medjson.params import load_params, log_params

log = logging.getLogger("medjson.evaluate")

PARAMS_READ = ("model", "evaluate")  # the params.yaml sections this stage reads (dvc.yaml lists the same)


def main() -> None:
    parser = stage_parser(__doc__, "eval", "out_dir", "metrics")
    add_model_arguments(parser)
    parser.add_argument("--abstention", type=Path, help="calibrate's abstention.json for this model and decoding")
    args = parser.parse_args()

    params = load_params(args.params)
    settings = params.evaluate
    spec, revision = model_to_run(args, params.model)
    log_params(f"evaluate {args.name} ({spec}, {args.decoding} decoding)", params.view(*PARAMS_READ))
    questions = read_pool(args.eval, EVAL_KEYS, LETTERS)  # checked whole before any model loads
    if settings.limit is not None:
        questions = questions[: settings.limit]
    abstention = Abstention.read(args.abstention) if args.abstention else None
    if abstention:
        abstention.check_unseen([q["id"] for q in questions])
    answerer = Answerer(spec, params.model, args.decoding, settings.max_new_tokens, revision, abstention)
    predictions, seconds = answerer.score_pool(questions, settings.batch_size, progress="evaluate")
    metrics = score(predictions)
    metrics["questions_per_s"] = len(questions) / seconds if seconds else 0.0
    metrics["new_tokens_per_s"] = sum(p["new_tokens"] for p in predictions) / seconds if seconds else 0.0
    metrics["device"] = device_name()
    metrics["constrained"] = int(args.decoding == CONSTRAINED)
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
