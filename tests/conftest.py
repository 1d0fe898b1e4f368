"""Shared fixtures: one thread per process, the tiny model, real MedMCQA where present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from constants import MEDMCQA_DEV, PROJECT_ROOT, QUESTIONS
from helpers import tiny_overrides

# Two processes on two cores with default threading ran training steps ~10x slower.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def questions_path() -> Path:
    return QUESTIONS


@pytest.fixture(scope="session")
def medmcqa_dev() -> Path:
    if not MEDMCQA_DEV.exists():
        pytest.skip(f"real MedMCQA validation data not found at {MEDMCQA_DEV}")
    return MEDMCQA_DEV


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from medjson.commands.tiny_model import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"), seed=0)


@pytest.fixture
def tiny_params(tmp_path, tiny_model, questions_path):
    """The project's params.yaml with the tiny overrides, loaded and checked."""
    import yaml

    from medjson.params import load_params
    from medjson.workspace import deep_update

    raw = deep_update(
        yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()), tiny_overrides(tiny_model, questions_path)
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


# The files that take longest (`pytest --durations`, 2 cores): pipeline about 440 s of test time (its
# run 235 s, the seed experiments 110 s), then predict (120 s), parallel (100 s), and modeling, serve and
# bad_input (about 60 s each). `make test` hands whole files to two workers in collection order
# (--no-loadscope-reorder): these go first, so the pipeline starts at once on one worker and the short
# files fill in on the other, instead of the pipeline starting last and running alone. In this order
# the suite took 517 s in the working copy and 520-558 s on fresh clones with empty caches (the GGUF model
# dequantized, matplotlib's font list built); an order with parallel and modeling ahead of bad_input
# was slower (their two-process training then overlaps the pipeline's run).
LONGEST_FIRST = (
    "test_pipeline.py",
    "test_predict.py",
    "test_bad_input.py",
    "test_parallel.py",
    "test_modeling.py",
    "test_serve.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order
