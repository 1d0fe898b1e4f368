#!/usr/bin/env bash
# Download, on a machine that reaches PyPI, the wheels bench/run_gpu.sh needs on a GPU machine
# that reaches nothing: the versions this project pins, for CPython 3.12 on x86-64 Linux.
# They land in .whl/ (ignored by git); carry that folder to the GPU machine with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl \
  trl==1.16.0 datasets==5.2.0 transformers==5.24.0 peft==0.21.2 huggingface_hub==2.4.0 \
  tokenizers==0.23.3 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
ls -1 .whl
