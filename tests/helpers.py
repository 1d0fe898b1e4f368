"""Small helpers the tests share: writing MedMCQA-shaped rows and running DVC with its output shown."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from medjson.workspace import dvc


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
    from medjson.abstention import Abstention
    from medjson.lineage import weights_digest

    Abstention(
        model=str(model),
        model_sha256=weights_digest(str(model)),
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
