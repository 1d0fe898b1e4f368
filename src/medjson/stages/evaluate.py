"""Stage `evaluate`: one model on the evaluation pool (or a benchmark's questions), greedy, batched, strictly parsed.

Run once per model (``evaluate@base``, ``@sft``, ``@grpo``) on the same questions, and by the
benchmark stages on each benchmark's questions. Writes per-question predictions, a flat
metrics file, and plot data (confusion matrix, reliability diagram, per-subject accuracy).
Beside the generated-JSON accuracy it scores each question the way lm-evaluation-harness does
(``--harness-task``: the letter the model rates most likely after the harness's zero-shot
prompt) into ``loglik.jsonl`` and ``loglik_accuracy``: what the model knows, against how it answers.
Speed (questions and tokens per second, the device) goes to its own file, ``--speed``, so the
metrics file is the same bytes whenever the predictions are.
With ``--abstention`` (the file ``calibrate`` fitted for this model on the calibration pool),
it also reports the coverage and accuracy that threshold reaches here, on questions it never saw.

    python -m medjson.stages.evaluate --model models/sft_merged --name sft \
        --eval data/pools/eval.jsonl --harness-task medmcqa --out-dir evaluation/sft \
        --metrics metrics/sft.json --speed metrics/speed/sft.json --abstention calibration/sft/abstention.json
    python -m medjson.stages.evaluate --base --name base ...   # the base model from params.yaml
    python -m medjson.stages.evaluate --base --name base --eval data/benchmark_pools/medqa.jsonl \
        --harness-task-of metrics/benchmarks/medqa/data.json ...   # a benchmark: its report names the task
"""

from __future__ import annotations

import logging
from pathlib import Path

from medjson.cli import add_model_arguments, model_to_run, run_stage, stage_parser
from medjson.core.abstention import Abstention
from medjson.core.choices import CONSTRAINED, HARNESS_TASKS
from medjson.core.prompts import LETTERS
from medjson.core.records import EVAL_KEYS, QUESTION_KEYS, read_json, read_pool, write_json, write_jsonl
from medjson.core.scoring import abstention_metrics, loglik_metrics, plot_data, score
from medjson.errors import StageError
from medjson.model.answering import Answerer
from medjson.model.modeling import device_name
from medjson.params import load_params, log_params

log = logging.getLogger("medjson.evaluate")

PARAMS_READ = ("model", "evaluate")  # the params.yaml sections this stage reads (dvc.yaml lists the same)


def main() -> None:
    parser = stage_parser(__doc__, "eval", "out_dir", "metrics", "speed")
    add_model_arguments(parser)
    harness = parser.add_mutually_exclusive_group(required=True)
    harness.add_argument(
        "--harness-task", choices=HARNESS_TASKS, help="the lm-evaluation-harness task whose prompt loglik_accuracy uses"
    )
    harness.add_argument(
        "--harness-task-of", type=Path, help="a benchmark's data report (benchmark_data), which names its task"
    )
    parser.add_argument("--abstention", type=Path, help="calibrate's abstention.json for this model and decoding")
    args = parser.parse_args()

    params = load_params(args.params)
    settings = params.evaluate
    task = args.harness_task or benchmark_harness_task(args.harness_task_of)
    spec, revision = model_to_run(args, params.model)
    log_params(f"evaluate {args.name} ({spec}, {args.decoding} decoding)", params.view(*PARAMS_READ))
    questions = read_pool(args.eval, EVAL_KEYS + QUESTION_KEYS, LETTERS)  # checked whole before any model loads
    if settings.limit is not None:
        questions = questions[: settings.limit]
    abstention = Abstention.read(args.abstention) if args.abstention else None
    if abstention:
        abstention.check_unseen([q["id"] for q in questions])
    answerer = Answerer(spec, params.model, args.decoding, settings.max_new_tokens, revision, abstention)
    predictions, seconds = answerer.score_pool(questions, settings.batch_size, progress="evaluate")
    logliks, loglik_seconds = answerer.score_logliks(questions, task, settings.batch_size)
    metrics = score(predictions)
    metrics.update(loglik_metrics(logliks))
    metrics["constrained"] = int(args.decoding == CONSTRAINED)
    if abstention:
        metrics.update(abstention_metrics(predictions, abstention))
    speed = {
        "questions_per_s": len(questions) / seconds if seconds else 0.0,
        "new_tokens_per_s": sum(p["new_tokens"] for p in predictions) / seconds if seconds else 0.0,
        "loglik_questions_per_s": len(questions) / loglik_seconds if loglik_seconds else 0.0,
        "device": device_name(),
    }
    write_jsonl(args.out_dir / "predictions.jsonl", predictions)
    write_jsonl(args.out_dir / "loglik.jsonl", logliks)
    for name, records in plot_data(predictions).items():
        write_json(args.out_dir / f"{name}.json", records)
    write_json(args.metrics, metrics)
    write_json(args.speed, speed)
    log.info(
        "%s: accuracy %.3f [%.3f, %.3f], valid JSON %.3f, schema %.3f; %s log-likelihood accuracy %.3f [%.3f, %.3f]; "
        "%.2f questions/s on %s",
        args.name,
        metrics["accuracy"],
        metrics["accuracy_ci_low"],
        metrics["accuracy_ci_high"],
        metrics["valid_json_rate"],
        metrics["schema_pass_rate"],
        task,
        metrics["loglik_accuracy"],
        metrics["loglik_accuracy_ci_low"],
        metrics["loglik_accuracy_ci_high"],
        speed["questions_per_s"],
        speed["device"],
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


def benchmark_harness_task(report: Path) -> str:
    """The harness task a benchmark's data report names (benchmark_data writes it)."""
    if not report.is_file():
        raise StageError(f"{report} is missing: run `dvc repro benchmark_data` first")
    task = read_json(report).get("harness_task")
    if task not in HARNESS_TASKS:
        raise StageError(f"{report} names no harness task of {list(HARNESS_TASKS)} ({task!r}): re-run benchmark_data")
    return task


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    run_stage(main)
