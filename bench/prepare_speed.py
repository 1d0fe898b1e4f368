"""`prepare` at full scale: a synthetic 194k-row MedMCQA-shaped source, timed end to end.

Writes the source once (bench/results/synthetic_194k.jsonl), then times reading,
validating, pooling and writing all three pools with the default params.yaml sizes
(the evaluation pool takes every row left: about 192k).

    python bench/prepare_speed.py [--rows 194000]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from common import ROOT, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=194_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prepare_speed.json")
    args = parser.parse_args()

    from synthetic import write_synthetic_source

    from medjson.core.records import write_jsonl
    from medjson.data.pools import pool_record
    from medjson.params import load_params
    from medjson.stages.prepare import POOLS, make_pools

    source = ROOT / "bench" / "results" / f"synthetic_{args.rows}.jsonl"
    if not source.exists():
        write_synthetic_source(source, args.rows)
    params = load_params(ROOT / "params.yaml")
    data = dataclasses.replace(params.data, source=str(source), layout="hub")
    prep = params.prepare
    started = time.perf_counter()
    pools, report_, drops, _ = make_pools(data, prep, params.seed)
    pooled = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for name in POOLS:
            write_jsonl(
                Path(out) / f"{name}.jsonl",
                (
                    pool_record(q, prep.reason_max_chars, prep.confidence_explained, prep.confidence_unexplained)
                    for q in pools[name]
                ),
            )
    finished = time.perf_counter()
    rows = [
        {
            "rows": args.rows,
            "sft": len(pools["sft"]),
            "grpo": len(pools["grpo"]),
            "eval": len(pools["eval"]),
            "read_validate_pool_s": pooled - started,
            "write_pools_s": finished - pooled,
            "total_s": finished - started,
        }
    ]
    report("prepare on a synthetic MedMCQA-sized source", rows, args.out)


if __name__ == "__main__":
    main()
