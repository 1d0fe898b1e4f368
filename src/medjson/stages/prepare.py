"""Stage `prepare`: deterministic, disjoint SFT, GRPO, calibration, held-out and evaluation pools, and a data report.

Hub source: the train split feeds the SFT, GRPO, calibration and held-out pools, the validation
split the evaluation pool. Local file: one file is carved into all five. The calibration pool is
where the abstention threshold is fitted (stage ``calibrate``), so that the evaluation pool
measures it out of sample. The held-out pool is what training watches: SFT's held-out loss and
GRPO's held-out rewards are measured on it every few steps, so a phase's curves say whether it
learns without touching the questions it is finally judged on.

    python -m medjson.stages.prepare --out-dir data/pools --report metrics/data.json
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from medjson.cli import run_stage, stage_parser
from medjson.core.questions import ExamQuestion
from medjson.core.records import write_json, write_jsonl
from medjson.data.layouts import ColumnMapping
from medjson.data.pools import (
    check_disjoint,
    fill_pools,
    group_by_question,
    normalize_question,
    pool_record,
    question_summary,
    shuffled,
)
from medjson.data.readers import is_local
from medjson.data.sources import LoadReport, load_source, validate_rows
from medjson.errors import DataError
from medjson.params import DEFAULT_PARAMS, DataParams, PrepareParams, load_params, log_params

log = logging.getLogger("medjson.prepare")

POOLS = ("sft", "grpo", "calibration", "heldout", "eval")
PARAMS_READ = ("seed", "data", "prepare")  # the params.yaml sections this stage reads (dvc.yaml lists the same)


def _validated(
    source: str,
    data: DataParams,
    prep: PrepareParams,
    split: str | None,
    report: LoadReport,
    mapping: ColumnMapping | None,
) -> list[ExamQuestion]:
    rows, layout = load_source(source, data.layout, data.revision, split, mapping)
    log.info("read %d rows from %s%s (layout: %s)", len(rows), source, f"[{split}]" if split else "", layout)
    return validate_rows(
        tqdm(rows, desc=f"validate {split or 'rows'}", unit="row", mininterval=1.0),
        layout,
        prep.bad_rows,
        prep.keep_multi,
        report,
        mapping,
    )


def make_pools(
    data: DataParams, prep: PrepareParams, seed: int, params_path: Path | str = DEFAULT_PARAMS
) -> tuple[dict[str, list[ExamQuestion]], LoadReport, Counter, int]:
    """The five pools (sft, grpo, calibration, heldout, eval), what validation dropped, what pooling dropped (both counted by reason),
    and how many valid rows were left over once every pool was full."""
    mapping = (
        ColumnMapping.from_params(data.columns, "data.columns", params_path, data.layout) if data.columns else None
    )
    report = LoadReport()
    pooling_drops: Counter = Counter()
    sizes = pool_sizes(prep)
    # The pools the hub's train split fills, in order (a local file fills eval after them).
    training_sizes = {name: size for name, size in sizes.items() if name != "eval"}
    if is_local(data.source):
        questions = _validated(data.source, data, prep, None, report, mapping)
        groups = shuffled(group_by_question(questions), seed)
        pools, discarded = fill_pools(groups, sizes)
        valid = len(questions)
    else:
        eval_questions = _validated(data.source, data, prep, "validation", report, mapping)
        valid = len(eval_questions)
        if prep.eval_size is not None and prep.eval_size < len(eval_questions):
            eval_questions = shuffled(eval_questions, seed)[: prep.eval_size]
        eval_texts = {normalize_question(q.question) for q in eval_questions}
        eval_ids = {q.id for q in eval_questions}
        train = _validated(data.source, data, prep, "train", report, mapping)
        valid += len(train)
        kept = [q for q in train if q.id not in eval_ids and normalize_question(q.question) not in eval_texts]
        pooling_drops["train_question_also_in_eval"] = len(train) - len(kept)
        pools, discarded = fill_pools(shuffled(group_by_question(kept), seed), training_sizes)
        pools["eval"] = eval_questions
    pooling_drops["same_question_cut_at_pool_edge"] = discarded
    pooling_drops = +pooling_drops  # zero counts are not drops
    check_dropped_share(report, prep, data.source)
    check_pool_sizes(pools, sizes, prep.allow_short_pools, data.source)
    check_disjoint(pools)
    not_used = valid - sum(pooling_drops.values()) - sum(len(pool) for pool in pools.values())
    return pools, report, pooling_drops, not_used


def pool_sizes(prep: PrepareParams) -> dict[str, int | None]:
    """Each pool's size as asked in params.yaml, in POOLS order (None: the whole rest)."""
    return {
        "sft": prep.sft_size,
        "grpo": prep.grpo_size,
        "calibration": prep.calibration_size,
        "heldout": prep.heldout_size,
        "eval": prep.eval_size,
    }


# Drops that a parameter asks for are choices, not bad rows.
CHOSEN_DROPS = {"multi_choice_type"}


def check_dropped_share(report: LoadReport, prep: PrepareParams, source: str) -> None:
    """With ``bad_rows: drop``, too many bad rows mean the wrong file or layout, not a few bad rows."""
    bad = {reason: n for reason, n in report.dropped.items() if reason not in CHOSEN_DROPS}
    share = sum(bad.values()) / report.rows_read if report.rows_read else 0.0
    if share > prep.max_dropped_share:
        top = ", ".join(f"{reason} {n}" for reason, n in Counter(bad).most_common(3))
        raise DataError(
            f"{source}: {sum(bad.values())} of {report.rows_read} rows ({share:.0%}) were dropped as bad, more than "
            f"prepare.max_dropped_share = {prep.max_dropped_share:.0%}; top reasons: {top}. "
            "Check data.source and data.layout, or raise max_dropped_share if these rows are really unusable"
        )


def check_pool_sizes(
    pools: dict[str, list[ExamQuestion]], sizes: dict[str, int | None], allow_short: bool, source: str
) -> None:
    """No pool is empty; one smaller than asked is an error, or a loud warning where allowed."""
    for name in POOLS:
        asked, got = sizes[name], len(pools[name])
        if got == 0:
            raise DataError(
                f"{source}: pool `{name}` is empty: the source has too few usable questions for "
                + " + ".join(f"{pool} {size or 'the rest'}" for pool, size in sizes.items())
            )
        if asked is not None and got < asked:
            message = f"pool `{name}` has {got} rows, fewer than the {asked} asked for: the source is too small"
            if not allow_short:
                raise DataError(
                    f"{source}: {message}; lower prepare.{name}_size, or set prepare.allow_short_pools: true"
                )
            log.warning("SHORT POOL: %s (prepare.allow_short_pools is true)", message)


def pools_report(
    pools: dict[str, list[ExamQuestion]], report: LoadReport, pooling_drops: Counter, not_used: int, sizes: dict
) -> dict:
    """The numbers a reviewer checks before trusting any training: sizes, balance, drops.

    They reconcile: rows_read = every pool's rows + every drop + rows_not_used.
    """
    summaries = {name: question_summary(pools[name]) for name in POOLS}
    return {
        "rows_read": report.rows_read,
        "rows": {name: len(pools[name]) for name in POOLS},
        "rows_dropped": sum(report.dropped.values()) + sum(pooling_drops.values()),
        "rows_not_used": not_used,
        "short_pools": {
            name: {"asked": sizes[name], "got": len(pools[name])}
            for name in POOLS
            if sizes[name] is not None and len(pools[name]) < sizes[name]
        },
        "answer_letters": {name: summaries[name]["answer_letters"] for name in POOLS},
        "subjects": {name: summaries[name]["subjects"] for name in POOLS},
        "eval_majority_accuracy": summaries["eval"]["majority_accuracy"],
        "dropped": dict(sorted((report.dropped + pooling_drops).items())),
        "source_null_explanations": report.null_explanations,
        "source_multi_questions": report.multi_questions,
        "source_repeated_options": report.repeated_options,
    }


def main() -> None:
    parser = stage_parser(__doc__, "out_dir", "report")
    args = parser.parse_args()

    params = load_params(args.params)
    log_params("prepare", params.view(*PARAMS_READ))
    prep = params.prepare
    pools, report, pooling_drops, not_used = make_pools(params.data, prep, params.seed, params.path)
    for name in POOLS:
        records = (
            pool_record(q, prep.reason_max_chars, prep.confidence_explained, prep.confidence_unexplained)
            for q in pools[name]
        )
        count = write_jsonl(args.out_dir / f"{name}.jsonl", records)
        log.info("wrote %d rows to %s", count, args.out_dir / f"{name}.jsonl")
    summary = pools_report(pools, report, pooling_drops, not_used, pool_sizes(prep))
    write_json(args.report, summary)
    log.info(
        "rows read %d = pooled %d + dropped %d + not used %d",
        summary["rows_read"],
        sum(summary["rows"].values()),
        summary["rows_dropped"],
        summary["rows_not_used"],
    )
    log.info("dropped rows by reason: %s", summary["dropped"] or "none")
    log.info("evaluation majority-class accuracy: %.3f", summary["eval_majority_accuracy"])


if __name__ == "__main__":
    run_stage(main)
