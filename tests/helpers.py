"""Small helpers the tests (and the service benchmark) share: writing MedMCQA-shaped rows, running DVC
with its output shown, waiting for a service to come up."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

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


def wait_until_ready(url: str, process, timeout_s: float) -> None:
    """Block until a service started as ``process`` answers ``GET /health`` with ok; raise if it exits
    or does not within ``timeout_s`` (the model loads before the port opens)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ok":
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the service at {url} was not ready within {timeout_s:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    folder: Path, model, env: dict | None = None, log: Path | None = None, ready_timeout_s: float = 120, **serve
) -> tuple[subprocess.Popen, str]:
    """``medjson serve`` on a free localhost port in a subprocess: the project's params.yaml with
    ``serve`` overrides (72 new tokens and no abstention file unless given), its output to
    ``log`` (a pipe without one); returns once it answers ``/health``."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    port = free_port()
    params["serve"].update({"max_new_tokens": 72, "abstention": None, **serve, "model": str(model), "port": port})
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    process = subprocess.Popen(
        [sys.executable, "-m", "medjson.commands.serve", "--params", str(folder / "params.yaml")],
        cwd=folder,
        stdout=log.open("w") if log else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, timeout_s=ready_timeout_s)
    except RuntimeError as err:
        raise RuntimeError(f"{err}: {f'see {log}' if log else process.stdout.read()}") from None
    return process, url
