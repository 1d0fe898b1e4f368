"""Stage `benchmark_data`: one benchmark's questions, read and checked like the training source,
with those the models were trained on counted and left out.

A benchmark question whose normalised text also sits in the SFT or GRPO pool would score
memory, not knowledge: it is left out of the benchmark's questions and counted in its data
report (``leaked_into_training``). ``limit`` takes the first N questions of the source, before
that, so the same N are asked whatever the pools hold. The report also names the layout the
source was read in and the lm-evaluation-harness task whose prompt scores its questions
(``harness_task``: the benchmark's own setting, or the layout's), which ``evaluate`` reads.

    python -m medjson.stages.benchmark_data --name medqa --pools data/pools \
        --out data/benchmark_pools/medqa.jsonl --report metrics/benchmarks/medqa/data.json
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from medjson.cli import run_stage, stage_parser
from medjson.core.questions import ExamQuestion
from medjson.core.records import QUESTION_KEYS, read_pool, write_json, write_jsonl
from medjson.data.layouts import ColumnMapping, harness_task_of
from medjson.data.pools import normalize_question, pool_record, question_summary
from medjson.data.sources import LoadReport, load_source, validate_rows
from medjson.errors import DataError, ParamsError
from medjson.params import BenchmarkParams, load_params, log_params

log = logging.getLogger("medjson.benchmark_data")

PARAMS_READ = ("benchmarks.${key}",)  # its own entry only (dvc.yaml: foreach over the benchmarks section)
TRAINING_POOLS = ("sft", "grpo")  # what the models learned from: a benchmark question in either has leaked


def training_texts(pools_dir: Path) -> set[str]:
    """Normalised question texts of every training pool."""
    return {
        normalize_question(record["question"])
        for pool in TRAINING_POOLS
        for record in read_pool(pools_dir / f"{pool}.jsonl", QUESTION_KEYS)
    }


def read_benchmark(
    name: str, bench: BenchmarkParams, params_path: Path | str
) -> tuple[list[ExamQuestion], LoadReport, str]:
    """The benchmark's first ``limit`` rows, validated (bad rows raise or are counted as ``bad_rows``
    says), and the layout they were read in."""
    mapping = (
        ColumnMapping.from_params(bench.columns, f"benchmarks.{name}.columns", params_path, bench.layout)
        if bench.columns
        else None
    )
    rows, layout = load_source(bench.source, bench.layout, bench.revision, bench.split, mapping, bench.subsets)
    log.info("read %d rows of benchmark %s from %s (layout: %s)", len(rows), name, bench.source, layout)
    if bench.limit is not None:
        rows = rows[: bench.limit]
    report = LoadReport()
    questions = validate_rows(rows, layout, bench.bad_rows, True, report, mapping, f"benchmarks.{name}.bad_rows")
    return questions, report, layout


def split_leaked(questions: list[ExamQuestion], seen: set[str]) -> tuple[list[ExamQuestion], list[ExamQuestion]]:
    """(questions the models never trained on, questions whose text they did)."""
    kept = [q for q in questions if normalize_question(q.question) not in seen]
    leaked = [q for q in questions if normalize_question(q.question) in seen]
    return kept, leaked


def benchmark_report(
    bench: BenchmarkParams, layout: str, kept: list[ExamQuestion], leaked: list[ExamQuestion], report: LoadReport
) -> dict:
    """What was read, asked and left out, and how the asked questions' letters and subjects spread."""
    return {
        "layout": layout,
        "harness_task": bench.harness_task or harness_task_of(layout),
        "rows_read": report.rows_read,
        "questions": len(kept),
        "leaked_into_training": len(leaked),
        "rows_dropped": sum(report.dropped.values()),
        "dropped": dict(sorted(report.dropped.items())),
        "limit": bench.limit,
        **question_summary(kept),
    }


def main() -> None:
    parser = stage_parser(__doc__, "pools", "out", "report")
    parser.add_argument("--name", required=True, help="the benchmark's key in the benchmarks section")
    args = parser.parse_args()

    params = load_params(args.params)
    if args.name not in params.benchmarks:
        raise ParamsError(
            f"{params.path}: no benchmark `{args.name}` in the benchmarks section ({sorted(params.benchmarks)})"
        )
    bench = params.benchmarks[args.name]
    log_params(f"benchmark_data {args.name}", {f"benchmarks.{args.name}": dataclasses.asdict(bench)})
    seen = training_texts(args.pools)  # checked before the benchmark is read
    questions, report, layout = read_benchmark(args.name, bench, params.path)
    kept, leaked = split_leaked(questions, seen)
    if not kept:
        raise DataError(
            f"benchmark {args.name}: no question left to ask ({report.rows_read} rows read, "
            f"{sum(report.dropped.values())} dropped as bad, {len(leaked)} also in the training pools); check its "
            "source and limit"
        )
    write_jsonl(args.out, (pool_record(q, 0, 0.0, 0.0) for q in kept))
    summary = benchmark_report(bench, layout, kept, leaked, report)
    write_json(args.report, summary)
    log.info(
        "benchmark %s: %d questions; %d left out as already in the training pools; %d rows dropped %s",
        args.name,
        summary["questions"],
        summary["leaked_into_training"],
        summary["rows_dropped"],
        summary["dropped"] or "",
    )
    if leaked:
        log.warning(
            "LEAKED: %d questions of %s are in the SFT/GRPO pools, e.g. %r", len(leaked), args.name, leaked[0].id
        )


if __name__ == "__main__":
    run_stage(main)
