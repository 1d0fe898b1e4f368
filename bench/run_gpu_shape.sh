#!/usr/bin/env bash
# bench/gpu_shape.py on a GPU machine: the stages' own code at Qwen3-0.6B's size with Qwen3's real
# tokenizer, on real MedMCQA questions, in fp16 and bf16 (about 5 minutes on one H200). Needs the wheels
# of bench/fetch_gpu_wheels.sh in .whl/ where the machine reaches no index, and MedMCQA's dev.json:
#
#     bash bench/run_gpu_shape.sh [path/to/dev.json] [gpu_shape.py options]   # default: .gpu-data/dev.json
#     bash bench/run_gpu_shape.sh .gpu-data/dev.json --parts decode grpo    # the decoders' call: under 8 minutes
#
# Writes one JSON per part to $OUT/gpu_shape (or bench/results/gpu_shape).
set -euo pipefail
data=$(realpath "${1:-$(dirname "$0")/../.gpu-data/dev.json}")
shift || true
cd "$(dirname "$0")"
source gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
python3 gpu_shape.py --data "$data" --out "${OUT:-results}/gpu_shape" "$@"
