# Sourced by the GPU scripts (bench/run_gpu*.sh): the wheels in .whl/ (bench/fetch_gpu_wheels.sh), installed
# ahead of whatever the GPU machine has, and the environment every benchmark runs in.
if compgen -G "../.whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/medjson-site ../.whl/*.whl
  export PYTHONPATH=/tmp/medjson-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
