"""Stage `compare`: paired differences between models on the same questions.

For each pair (sft vs base, grpo vs sft, grpo vs base, and each model under the answer
grammar vs the same model alone), on every measure a phase is trained towards:
- accuracy, valid JSON and schema pass: the difference of the rates with Newcombe's 95% hybrid
  score interval and an exact McNemar p-value;
- the stated confidence's Brier error over every question (``brier_stated_all``): the mean
  per-question difference with a Student t interval and the paired t-test (Diebold-Mariano);
each with a verdict: better or worse only where interval and test both see a difference,
"unsettled" where they disagree. A gain whose interval straddles zero is not yet a gain.

    python -m medjson.stages.compare --evaluations evaluation --out metrics/comparison.json
"""

from __future__ import annotations

import logging

from medjson.cli import run_stage, stage_parser
from medjson.core.records import read_jsonl, write_json
from medjson.core.scoring import PAIRS, compare, comparison_rows

log = logging.getLogger("medjson.compare")


def main() -> None:
    parser = stage_parser(__doc__, "evaluations", "out", reads_params=False)
    args = parser.parse_args()
    names = sorted({name for pair in PAIRS for name in pair})
    predictions = {name: read_jsonl(args.evaluations / name / "predictions.jsonl") for name in names}
    result = compare(predictions)
    write_json(args.out, result)
    for row in comparison_rows(result):
        log.info(
            "%s, %s: %+.3f [%+.3f, %+.3f], %s p = %.3g: %s",
            row["pair"],
            row["measure"],
            row["diff"],
            row["ci_low"],
            row["ci_high"],
            row["test"],
            row["p"],
            row["verdict"],
        )


if __name__ == "__main__":
    run_stage(main)
