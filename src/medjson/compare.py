"""Stage `compare`: paired accuracy differences between models on the same questions.

For each pair (sft vs base, grpo vs sft, grpo vs base, and each model under the answer
grammar vs the same model alone): the accuracy difference with a 95% interval and an
exact McNemar p-value. A gain whose interval straddles zero is not yet a gain.

    python -m medjson.compare --evaluations evaluation --out metrics/comparison.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from medjson.cli import run_stage
from medjson.errors import StageError
from medjson.records import read_jsonl, write_json
from medjson.stats import paired_comparison

log = logging.getLogger("medjson.compare")

# Each training phase against the one before, and what the answer grammar adds to each model.
PAIRS = (
    ("sft", "base"),
    ("grpo", "sft"),
    ("grpo", "base"),
    ("sft_constrained", "sft"),
    ("grpo_constrained", "grpo"),
)


# Each training phase against the one before: what the benchmark report compares too.
TRAINING_PAIRS = PAIRS[:3]


def compare(predictions: dict[str, list[dict]], pairs: tuple[tuple[str, str], ...] = PAIRS) -> dict[str, dict]:
    """Paired comparisons for every pair; the two models must have answered the same questions."""
    correct = {}
    for name, rows in predictions.items():
        if not rows or any(not isinstance(r.get("correct"), bool) or "id" not in r for r in rows):
            raise StageError(
                f"the {name} predictions are empty or lack `id`/`correct`: re-run evaluate@{name} (dvc repro)"
            )
        correct[name] = {r["id"]: r["correct"] for r in rows}
    out = {}
    for new, old in pairs:
        if set(correct[new]) != set(correct[old]):
            raise StageError(f"{new} and {old} were evaluated on different questions: re-run evaluate for both")
        ids = sorted(correct[new])
        result = paired_comparison([correct[new][i] for i in ids], [correct[old][i] for i in ids])
        out[f"{new}_vs_{old}"] = dataclasses.asdict(result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=Path, default=Path("evaluation"))
    parser.add_argument("--out", type=Path, default=Path("metrics/comparison.json"))
    args = parser.parse_args()
    names = sorted({name for pair in PAIRS for name in pair})
    predictions = {name: read_jsonl(args.evaluations / name / "predictions.jsonl") for name in names}
    result = compare(predictions)
    write_json(args.out, result)
    for pair, r in result.items():
        log.info(
            "%s: %+.3f [%+.3f, %+.3f], McNemar p = %.3g (n = %d)",
            pair,
            r["accuracy_diff"],
            r["ci_low"],
            r["ci_high"],
            r["mcnemar_p"],
            r["n"],
        )


if __name__ == "__main__":
    run_stage(main)
