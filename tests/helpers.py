"""Small helpers the tests share: writing MedMCQA-shaped rows and abstention files, running DVC with
its output shown, the tiny pipeline's overrides. (The service in a background process, which the load
benchmark uses too, is ``medjson.workspace.service``.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from medjson.workspace import PROJECT_ROOT, dvc


def medmcqa_row(i: int, cop: int, **changes) -> dict:
    row = {
        "id": f"row-{i}",
        "question": f"Which option is number {i}?",
        "opa": f"alpha {i}",
        "opb": f"beta {i}",
        "opc": f"gamma {i}",
        "opd": f"delta {i}",
        "cop": cop,
        "choice_type": "single",
        "exp": f"Because {i} is special.",
        "subject_name": ["Anatomy", "Physiology", "Surgery"][i % 3],
        "topic_name": None,
    }
    row.update(changes)
    return row


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_dvc(folder: Path, *args: str) -> str:
    """stdout of a DVC command that must succeed (a stage's own log goes to stderr: see ``dvc_output``)."""
    return dvc_output(folder, *args)[0]


def dvc_output(folder: Path, *args: str) -> tuple[str, str]:
    result = dvc(folder, *args, check=False)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout, result.stderr


def curve_steps(curves_dir: Path, metric: str) -> list[int]:
    """The steps a DVCLive curve holds, in order."""
    rows = list(csv.DictReader((curves_dir / "plots" / "metrics" / f"{metric}.tsv").open(), delimiter="\t"))
    return [int(row["step"]) for row in rows]


def write_abstention_file(path: Path, model: Path, decoding: str, threshold: float | None) -> Path:
    """An abstention file for ``model`` on the letter probability at temperature 1, as calibrate writes one."""
    from medjson.core.abstention import Abstention
    from medjson.model.lineage import weights_digest
    from medjson.model.modeling import resolve_source

    Abstention(
        model=str(model),
        model_sha256=weights_digest(resolve_source(str(model))),
        revision=None,
        decoding=decoding,
        confidence="letter",
        temperature=1.0,
        threshold=threshold,
        target_accuracy=0.5,
        min_kept=1,
        calibration_n=10,
        calibration_coverage=0.5,
        calibration_accuracy=0.5,
        calibration_ece={"stated": 0.4, "letter": 0.1},
        fitted_on=["c1"],
    ).write(path)
    return path


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
