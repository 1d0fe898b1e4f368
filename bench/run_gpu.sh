#!/usr/bin/env bash
# GPU benchmarks 1-3 with Qwen3-0.6B's shape (random weights: no hub needed), in under 5 minutes
# on one H100. Prints each table and writes JSON to bench/results/ (or $OUT when set).
# It needs trl, datasets and this project's transformers/peft pins. Where the GPU machine reaches no
# index, run bench/fetch_gpu_wheels.sh beforehand on a machine that does; the wheels in .whl/ are
# installed here, ahead of whatever the machine has.
set -euo pipefail
cd "$(dirname "$0")"
source gpu_env.sh
results=${OUT:-results}
mkdir -p "$results"
python3 eval_throughput.py --random-qwen3-0.6b --n 200 --batch-size 200 --max-new-tokens 128 --out "$results/eval_throughput_gpu.json"
python3 sft_step.py --random-qwen3-0.6b --seq-len 320 --steps 5 --also-single-pass --out "$results/sft_step_gpu.json"
python3 grpo_step.py --random-qwen3-0.6b --steps 3 --out "$results/grpo_step_gpu.json"
