"""Stage `compare`: paired accuracy differences between models on the same questions.

For each pair (sft vs base, grpo vs sft, grpo vs base, and each model under the answer
grammar vs the same model alone): the accuracy difference with Newcombe's 95% hybrid score
interval, an exact McNemar p-value, and a verdict: better or worse only where both see a
difference, "unsettled" where they disagree. A gain whose interval straddles zero is not yet a gain.

    python -m medjson.compare --evaluations evaluation --out metrics/comparison.json
"""

from __future__ import annotations

import logging

from medjson.cli import run_stage, stage_parser
from medjson.core.records import read_jsonl, write_json
from medjson.core.scoring import PAIRS, compare

log = logging.getLogger("medjson.compare")


def main() -> None:
    parser = stage_parser(__doc__, "evaluations", "out", reads_params=False)
    args = parser.parse_args()
    names = sorted({name for pair in PAIRS for name in pair})
    predictions = {name: read_jsonl(args.evaluations / name / "predictions.jsonl") for name in names}
    result = compare(predictions)
    write_json(args.out, result)
    for pair, r in result.items():
        log.info(
            "%s: %+.3f [%+.3f, %+.3f], McNemar p = %.3g (n = %d): %s",
            pair,
            r["accuracy_diff"],
            r["ci_low"],
            r["ci_high"],
            r["mcnemar_p"],
            r["n"],
            r["verdict"],
        )


if __name__ == "__main__":
    run_stage(main)
