"""Shared fixtures: one thread per process, the tiny model, real MedMCQA where present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two processes on two cores with default threading ran training steps ~10x slower.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = PROJECT_ROOT / "data" / "questions" / "medjson_questions.jsonl"
MEDMCQA_DEV = PROJECT_ROOT.parent / "shared" / "data" / "medmcqa" / "dev.json"


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
    from tiny_model import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"), seed=0)


def tiny_overrides(model: Path, questions: Path) -> dict:
    """Parameters that run the whole pipeline on the tiny model in about two minutes on CPU.

    The neutral reason (reason_max_chars 0) keeps the target learnable for a model this
    small; at a LoRA rate near 1e-2, 150 steps take it from no JSON to nearly all JSON. GRPO samples at 1.0: the SFT'd
    tiny model keeps its format there, and its letter varies within a group, so rewards vary.
    """
    return {
        "model": {"base": str(model), "revision": None},
        "data": {"source": str(questions)},
        "prepare": {
            "sft_size": 92,  # with the held-out pool's 8, the evaluation pool keeps its 40 of the 200 questions
            "grpo_size": 40,
            "calibration_size": 20,
            "heldout_size": 8,
            "reason_max_chars": 0,
        },
        "sft": {
            "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
            "trainer": {
                "learning_rate": 2.0e-2,
                "max_steps": 150,
                "per_device_train_batch_size": 8,
                "logging_steps": 10,
                "save_steps": 50,
                "activation_checkpointing": False,
                "warmup_steps": 0,
            },
        },
        "grpo": {
            "guard": {"preflight_prompts": 4},
            "trainer": {
                "max_steps": 3,
                "per_device_train_batch_size": 8,
                "gradient_accumulation_steps": 1,
                "temperature": 1.0,
                "max_completion_length": 64,
                "learning_rate": 1.0e-2,
                "activation_checkpointing": False,
                "save_steps": 100,
                "log_completions": False,
            },
        },
        "evaluate": {"batch_size": 40, "max_new_tokens": 64},
        "calibrate": {"target_accuracy": 0.3, "min_kept": 5},
        "benchmarks": {
            name: {"source": str(PROJECT_ROOT / "data" / "benchmarks" / file), "layout": layout, "split": None}
            | {"subsets": None, "limit": limit}
            for name, file, layout, limit in (
                ("medqa", "medqa_demo.jsonl", "medqa", None),  # its last three repeat project questions
                ("mmlu_medical", "medjson_medical_test.csv", "mmlu", 12),
            )
        },
    }


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
