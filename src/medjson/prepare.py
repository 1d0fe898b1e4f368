"""Stage `prepare`: deterministic, disjoint SFT, GRPO and evaluation pools, and a data report.

Hub source: the train split feeds the SFT and GRPO pools, the validation split the
evaluation pool. Local file: one file is carved into all three.

    python -m medjson.prepare --out-dir data/pools --report metrics/data.json
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from medjson.cli import run_stage
from medjson.params import DataParams, PrepareParams, load_params, log_params
from medjson.pools import (
    check_disjoint,
    fill_pools,
    group_by_question,
    normalize_question,
    pool_record,
    shuffled,
)
from medjson.records import write_json, write_jsonl
from medjson.sources import LoadReport, Question, is_local, load_source, validate_rows
from medjson.stats import majority_accuracy

log = logging.getLogger("medjson.prepare")

POOLS = ("sft", "grpo", "eval")
PARAMS_READ = ("seed", "data", "prepare")  # the params.yaml sections this stage reads (dvc.yaml lists the same)


def _validated(
    source: str, data: DataParams, prep: PrepareParams, split: str | None, report: LoadReport
) -> list[Question]:
    rows, layout = load_source(source, data.layout, data.revision, split)
    log.info("read %d rows from %s%s (layout: %s)", len(rows), source, f"[{split}]" if split else "", layout)
    return validate_rows(
        tqdm(rows, desc=f"validate {split or 'rows'}", unit="row", mininterval=1.0),
        layout,
        prep.bad_rows,
        prep.keep_multi,
        report,
    )


def make_pools(
    data: DataParams, prep: PrepareParams, seed: int
) -> tuple[dict[str, list[Question]], LoadReport, Counter]:
    """The three pools, what validation dropped, and what pooling dropped (both counted by reason)."""
    report = LoadReport()
    pooling_drops: Counter = Counter()
    training_sizes = {"sft": prep.sft_size, "grpo": prep.grpo_size}
    if is_local(data.source):
        questions = _validated(data.source, data, prep, None, report)
        groups = shuffled(group_by_question(questions), seed)
        pools, discarded = fill_pools(groups, {**training_sizes, "eval": prep.eval_size})
    else:
        eval_questions = _validated(data.source, data, prep, "validation", report)
        if prep.eval_size is not None and prep.eval_size < len(eval_questions):
            eval_questions = shuffled(eval_questions, seed)[: prep.eval_size]
        eval_texts = {normalize_question(q.question) for q in eval_questions}
        eval_ids = {q.id for q in eval_questions}
        train = _validated(data.source, data, prep, "train", report)
        kept = [q for q in train if q.id not in eval_ids and normalize_question(q.question) not in eval_texts]
        pooling_drops["train_question_also_in_eval"] = len(train) - len(kept)
        pools, discarded = fill_pools(shuffled(group_by_question(kept), seed), training_sizes)
        pools["eval"] = eval_questions
    pooling_drops["same_question_cut_at_pool_edge"] = discarded
    for name, size in {**training_sizes, "eval": prep.eval_size}.items():
        if size is not None and len(pools[name]) < size:
            log.warning(
                "pool %s has %d rows, fewer than the %d asked for: the source is too small",
                name,
                len(pools[name]),
                size,
            )
    check_disjoint(pools)
    return pools, report, pooling_drops


def data_report(pools: dict[str, list[Question]], report: LoadReport, pooling_drops: Counter) -> dict:
    """The numbers a reviewer checks before trusting any training: sizes, balance, drops."""
    return {
        "rows": {name: len(pools[name]) for name in POOLS},
        "answer_letters": {name: dict(sorted(Counter(q.answer for q in pools[name]).items())) for name in POOLS},
        "subjects": {name: dict(sorted(Counter(q.subject for q in pools[name]).items())) for name in POOLS},
        "eval_majority_accuracy": round(majority_accuracy([q.answer for q in pools["eval"]]), 4),
        "dropped": dict(sorted((report.dropped + pooling_drops).items())),
        "source_null_explanations": report.null_explanations,
        "source_multi_questions": report.multi_questions,
        "source_repeated_options": report.repeated_options,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out-dir", type=Path, default=Path("data/pools"))
    parser.add_argument("--report", type=Path, default=Path("metrics/data.json"))
    args = parser.parse_args()

    params = load_params(args.params)
    log_params("prepare", params.view(*PARAMS_READ))
    pools, report, pooling_drops = make_pools(params.data, params.prepare, params.seed)
    prep = params.prepare
    for name in POOLS:
        records = (
            pool_record(q, prep.reason_max_chars, prep.confidence_explained, prep.confidence_unexplained)
            for q in pools[name]
        )
        count = write_jsonl(args.out_dir / f"{name}.jsonl", records)
        log.info("wrote %d rows to %s", count, args.out_dir / f"{name}.jsonl")
    summary = data_report(pools, report, pooling_drops)
    write_json(args.report, summary)
    log.info("dropped rows by reason: %s", summary["dropped"] or "none")
    log.info("evaluation majority-class accuracy: %.3f", summary["eval_majority_accuracy"])


if __name__ == "__main__":
    run_stage(main)
