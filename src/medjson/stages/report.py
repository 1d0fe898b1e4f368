"""Stage `report`: every model on every benchmark in one markdown table, with paired comparisons.

For each benchmark in params.yaml (and the evaluation pool): the accuracy of the
generated JSON answers with its 95% interval ("answers in JSON"), beside the harness-style
log-likelihood accuracy with its interval ("knows": the letter the model rates most likely after
lm-evaluation-harness's zero-shot prompt, comparable with published figures), the valid-JSON
rate, the majority-letter baseline, the number of questions, and how many were left out
because they sit in the training pools. Below it, each model's predicted-letter shares beside
the gold ones on the evaluation pool (a model collapsing onto one letter shows there), then, per
benchmark, each training phase against the one before on accuracy, valid JSON, schema pass and
the stated confidence's Brier error (difference with its interval, p-value, verdict: ``compare``'s
measures), also written as metrics for `dvc metrics diff`.

    python -m medjson.stages.report --out reports/benchmarks.md --comparison metrics/benchmark_comparison.json
"""

from __future__ import annotations

import logging
from pathlib import Path

from medjson.cli import run_stage, stage_parser
from medjson.core.choices import PHASES
from medjson.core.prompts import LETTERS
from medjson.core.records import read_json, read_jsonl, write_json
from medjson.core.scoring import INVALID, TRAINING_PAIRS, compare, comparison_rows
from medjson.errors import StageError
from medjson.params import load_params

log = logging.getLogger("medjson.report")

PARAMS_READ = ("benchmarks",)  # which benchmarks to report (dvc.yaml lists the same)
EVAL_POOL = "eval pool"  # the evaluation pool of data.source, beside the benchmarks


def _read(path: Path, stage: str):
    if not path.is_file():
        raise StageError(f"{path} is missing: run `dvc repro {stage}` first")
    return read_json(path)


def benchmark_rows(benchmarks: list[str], metrics: Path, eval_metrics: Path) -> list[dict]:
    """One row per benchmark and model, from the metrics files the evaluations wrote."""
    rows = []
    for bench in [EVAL_POOL, *benchmarks]:
        data = {} if bench == EVAL_POOL else _read(metrics / bench / "data.json", f"benchmark_data@{bench}")
        for model in PHASES:
            if bench == EVAL_POOL:
                m = _read(eval_metrics / f"{model}.json", f"evaluate@{model}")
            else:
                m = _read(metrics / bench / f"{model}.json", f"benchmark@{bench}-{model}")
            rows.append(
                {
                    "benchmark": bench,
                    "model": model,
                    "accuracy": m["accuracy"],
                    "ci_low": m["accuracy_ci_low"],
                    "ci_high": m["accuracy_ci_high"],
                    "loglik": m["loglik_accuracy"],
                    "loglik_low": m["loglik_accuracy_ci_low"],
                    "loglik_high": m["loglik_accuracy_ci_high"],
                    "valid_json": m["valid_json_rate"],
                    "majority": m["majority_baseline"],
                    "n": m["n"],
                    "left_out": data.get("leaked_into_training"),
                }
            )
    return rows


def letter_share_table(eval_metrics: Path) -> list[str]:
    """Each model's share of answers per letter (and invalid) on the evaluation pool, under the gold shares."""
    labels = (*LETTERS, INVALID)
    lines = [
        "| eval pool | " + " | ".join(labels) + " | largest letter share |",
        "|---|" + "---|" * (len(labels) + 1),
    ]
    first = _read(eval_metrics / f"{PHASES[0]}.json", f"evaluate@{PHASES[0]}")
    gold = [first[f"gold_share_{letter}"] for letter in LETTERS]
    lines.append("| gold | " + " | ".join(f"{g:.3f}" for g in gold) + f" | - | {max(gold):.3f} |")
    for model in PHASES:
        m = _read(eval_metrics / f"{model}.json", f"evaluate@{model}")
        shares = [m[f"predicted_share_{label}"] for label in labels]
        lines.append(f"| {model} | " + " | ".join(f"{s:.3f}" for s in shares) + f" | {max(shares[:-1]):.3f} |")
    return lines


def markdown(rows: list[dict], comparisons: dict[str, dict], letter_shares: list[str]) -> str:
    lines = [
        "| benchmark | model | answers in JSON: accuracy [95% CI] | knows: log-likelihood accuracy [95% CI] "
        "| valid JSON | majority baseline | n | left out: in training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        left_out = "-" if r["left_out"] is None else str(r["left_out"])
        lines.append(
            f"| {r['benchmark']} | {r['model']} | {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
            f"| {r['loglik']:.3f} [{r['loglik_low']:.3f}, {r['loglik_high']:.3f}] "
            f"| {r['valid_json']:.3f} | {r['majority']:.3f} | {r['n']} | {left_out} |"
        )
    lines += ["", *letter_shares]
    lines += [
        "",
        "| benchmark | comparison | measure | difference [95% CI] | test | p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench, pairs in comparisons.items():
        for r in comparison_rows(pairs):
            lines.append(
                f"| {bench} | {r['pair']} | {r['measure']} "
                f"| {r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] "
                f"| {r['test']} | {r['p']:.3g} | {r['verdict']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = stage_parser(__doc__, "predictions", "metrics", "eval_metrics", "comparison", "out")
    args = parser.parse_args()

    benchmarks = sorted(load_params(args.params).benchmarks)
    rows = benchmark_rows(benchmarks, args.metrics, args.eval_metrics)
    comparisons = {
        bench: compare(
            {m: read_jsonl(args.predictions / bench / m / "predictions.jsonl") for m in PHASES}, TRAINING_PAIRS
        )
        for bench in benchmarks
    }
    write_json(args.comparison, comparisons)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, comparisons, letter_share_table(args.eval_metrics)), encoding="utf-8")
    log.info("wrote %s (%d benchmarks x %d models) and %s", args.out, len(benchmarks) + 1, len(PHASES), args.comparison)


if __name__ == "__main__":
    run_stage(main)
