"""Bad input never crashes a stage, never deletes what the stage does not own, never passes as success.

Each case runs a real stage (``python -m medjson.stages.<stage>``) in a folder of its own, and checks
the exit code, that the message names the file, row, key or field at fault, that no traceback
is printed, and that nothing but the stage's own outputs changed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from constants import QUESTIONS
from helpers import medmcqa_row, tiny_overrides, write_rows

from medjson.workspace import PROJECT_ROOT, deep_update

pytestmark = pytest.mark.slow  # every case runs a stage in a subprocess

# Outputs each stage may write (relative to its folder); everything else must stay as it was.
OUTPUTS = {
    "prepare": ("data/pools", "metrics/data.json"),
    "sft": ("models/sft_adapter", "training/sft", "checkpoints/sft"),
    "grpo": ("models/grpo_adapter", "training/grpo", "metrics/grpo_training.json", "checkpoints/grpo"),
    "merge": ("models/out_merged",),
    "evaluate": ("evaluation/m", "metrics/m.json"),
    "compare": ("metrics/comparison.json",),
}
READS_PARAMS = {"prepare", "sft", "grpo", "evaluate"}
# The paths dvc.yaml passes each stage (a stage has no path defaults of its own).
ARGS = {
    "prepare": ["--out-dir", "data/pools", "--report", "metrics/data.json"],
    "sft": [
        "--train",
        "data/pools/sft.jsonl",
        "--heldout",
        "data/pools/heldout.jsonl",
        "--adapter",
        "models/sft_adapter",
    ]
    + ["--curves", "training/sft", "--summary", "metrics/sft_training.json", "--scratch", "checkpoints/sft"],
    "grpo": [
        "--model",
        "models/sft_merged",
        "--train",
        "data/pools/grpo.jsonl",
        "--heldout",
        "data/pools/heldout.jsonl",
    ]
    + ["--adapter", "models/grpo_adapter"]
    + ["--curves", "training/grpo", "--summary", "metrics/grpo_training.json", "--scratch", "checkpoints/grpo"],
    "merge": ["--adapter", "models/sft_adapter", "--out", "models/out_merged"],
    "evaluate": ["--model", "models/m", "--name", "m", "--eval", "data/pools/eval.jsonl"]
    + ["--harness-task", "medmcqa", "--out-dir", "evaluation/m", "--metrics", "metrics/m.json"]
    + ["--speed", "metrics/speed/m.json"],
    "compare": ["--evaluations", "evaluation", "--out", "metrics/comparison.json"],
}


@dataclass
class Case:
    stage: str
    prepare: Callable[[Path, dict], None]  # writes files into the folder and edits the params (a dict)
    message: str  # a regex the error must match
    exit_code: int = 1
    params_file: str = "params.yaml"
    args: list[str] = field(default_factory=list)


def _params(tiny_model: Path) -> dict:
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params = deep_update(raw, tiny_overrides(tiny_model, QUESTIONS))
    params["prepare"].update(sft_size=4, grpo_size=2, calibration_size=2, heldout_size=2, eval_size=None)
    return params


def _source(folder: Path, params: dict, rows: list[dict], name: str = "source.jsonl") -> Path:
    path = write_rows(folder / name, rows)
    params["data"]["source"] = str(path)
    return path


def _raw_source(name: str, content: bytes | None) -> Callable[[Path, dict], None]:
    """A source file of these bytes (None: a folder of that name)."""

    def run(folder: Path, params: dict) -> None:
        path = folder / name
        path.mkdir() if content is None else path.write_bytes(content)
        params["data"]["source"] = str(path)

    return run


def _good_rows(n: int = 12) -> list[dict]:
    return [medmcqa_row(i, cop=(i % 4) + 1) for i in range(n)]


def _pool(folder: Path, name: str, rows: list[dict]) -> None:
    (folder / "data/pools").mkdir(parents=True, exist_ok=True)
    write_rows(folder / "data/pools" / f"{name}.jsonl", rows)


def _pool_rows(n: int = 4) -> list[dict]:
    from medjson.core.questions import ExamQuestion
    from medjson.data.pools import pool_record

    return [
        pool_record(
            ExamQuestion(f"q{i}", f"Which nerve {i}?", ["a", "b", "c", "d"], "B", "Anatomy", "single", ""), 0, 0.85, 0.6
        )
        for i in range(n)
    ]


def _set(path: str, value) -> Callable[[Path, dict], None]:
    def change(folder: Path, params: dict) -> None:
        *parents, key = path.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        node[key] = value

    return change


def _steps(*changes: Callable[[Path, dict], None]) -> Callable[[Path, dict], None]:
    def run(folder: Path, params: dict) -> None:
        for change in changes:
            change(folder, params)

    return run


def _model_copy(tiny_model: Path, folder: Path, name: str = "m") -> Path:
    target = folder / "models" / name
    shutil.copytree(tiny_model, target)
    return target


TINY: dict[str, Path] = {}  # filled by the fixture: the cases are built at import time


def _with_model(edit: Callable[[Path], None] | None = None, name: str = "m"):
    def run(folder: Path, params: dict) -> None:
        model = _model_copy(TINY["model"], folder, name)
        if edit:
            edit(model)

    return run


def _truncate_weights(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _adapter(record: dict | str | None, weights: bool = True):
    def run(folder: Path, params: dict) -> None:
        adapter = folder / "models/sft_adapter"
        adapter.mkdir(parents=True)
        if record is not None:
            text = record if isinstance(record, str) else json.dumps(record)
            (adapter / "medjson_base.json").write_text(text)
        if weights:
            (adapter / "adapter_model.safetensors").write_bytes(b"not really weights")

    return run


def _sft_pools(folder: Path, params: dict) -> None:
    """The pools SFT reads: its training pool and the held-out pool it is measured on."""
    _pool(folder, "sft", _pool_rows())
    _pool(folder, "heldout", _pool_rows())


def _foreign_scratch(folder: Path, params: dict) -> None:
    _sft_pools(folder, params)
    scratch = folder / "checkpoints/sft"
    scratch.mkdir(parents=True)
    (scratch / "results-i-need.csv").write_text("a,b\n1,2\n")
    (scratch / "checkpoint-5").mkdir()


def _predictions(folder: Path, params: dict) -> None:
    from medjson.core.scoring import PAIRS

    for name in {name for pair in PAIRS for name in pair}:
        (folder / "evaluation" / name).mkdir(parents=True)
        (folder / "evaluation" / name / "predictions.jsonl").write_text("")


CASES = {
    # Deletes what it does not own.
    "scratch folder without a run marker": Case("sft", _foreign_scratch, r"checkpoints/sft already holds files"),
    # Wrong results with exit code 0.
    "empty source file": Case("prepare", lambda f, p: _source(f, p, []), r"source\.jsonl: holds no rows"),
    "source too small for the pools": Case(
        "prepare",
        _steps(lambda f, p: _source(f, p, _good_rows(5)), _set("prepare.sft_size", 20)),
        r"pool `sft` has 5 rows, fewer than the 20 asked for.*allow_short_pools",
    ),
    "every row dropped": Case(
        "prepare",
        _steps(
            lambda f, p: _source(f, p, [medmcqa_row(i, cop=float(i % 4 + 1)) for i in range(12)]),
            _set("prepare.bad_rows", "drop"),
        ),
        r"12 of 12 rows \(100%\) were dropped.*cop_not_an_integer 12",
    ),
    "integer ids everywhere": Case(
        "prepare",
        _steps(
            lambda f, p: _source(f, p, [medmcqa_row(i, cop=1 + i % 4, id=i) for i in range(12)]),
            _set("prepare.bad_rows", "drop"),
        ),
        r"id_not_a_string 12",
    ),
    "negative evaluate.limit": Case("prepare", _set("evaluate.limit", -5), r"`evaluate\.limit` = -5 is out of range"),
    "zero max_new_tokens": Case("prepare", _set("evaluate.max_new_tokens", 0), r"`evaluate\.max_new_tokens` = 0"),
    "negative pool size": Case("prepare", _set("prepare.grpo_size", -3), r"`prepare\.grpo_size` = -3"),
    "confidence above 1": Case("prepare", _set("prepare.confidence_explained", 1.5), r"confidence_explained` = 1\.5"),
    "zero batch size": Case("prepare", _set("evaluate.batch_size", 0), r"`evaluate\.batch_size` = 0"),
    "no reward weights": Case("grpo", _set("grpo.rewards", {}), r"grpo\.rewards` gives no reward a positive weight"),
    "one unknown reward among good ones": Case(
        "grpo", _set("grpo.rewards", {"valid_json": 1.0, "niceness": 1.0}), r"`grpo\.rewards\.niceness` is not a reward"
    ),
    # Tracebacks instead of a clear error.
    "learning rate as a string": Case(
        "sft", _set("sft.trainer.learning_rate", "2e-4"), r"`sft\.trainer\.learning_rate` = '2e-4'.*as a string"
    ),
    "temperature as a string": Case("grpo", _set("grpo.trainer.temperature", "0.7"), r"grpo\.trainer\.temperature"),
    "a non-UTF-8 byte": Case(
        "prepare", _raw_source("source.jsonl", b'{"id": "a"}\n{"id": "\xff"}\n'), r"source\.jsonl:2: not UTF-8"
    ),
    "a folder as the source": Case("prepare", _raw_source("qs", None), r"qs is a folder"),
    "a corrupt parquet file": Case(
        "prepare", _raw_source("s.parquet", b"PAR1 garbage"), r"s\.parquet: not a readable parquet file"
    ),
    "a .gz file": Case(
        "prepare",
        _raw_source("s.jsonl.gz", gzip.compress(b"{}\n")),
        r"s\.jsonl\.gz: cannot read \.gz files.*decompress",
    ),
    "a file with other columns": Case(
        "prepare", lambda f, p: _source(f, p, [{"q": "x", "a": 1}] * 5), r"rows have no \['id', 'question'"
    ),
    "an evaluation row without answer": Case(
        "evaluate",
        _steps(
            _with_model(),
            lambda f, p: _pool(f, "eval", [{k: v for k, v in r.items() if k != "answer"} for r in _pool_rows()]),
        ),
        r"eval\.jsonl: row 1 \(id 'q0'\) has no `answer`",
    ),
    "an empty evaluation pool": Case(
        "evaluate", _steps(_with_model(), lambda f, p: _pool(f, "eval", [])), r"eval\.jsonl holds no rows"
    ),
    "a garbage config.json": Case(
        "evaluate",
        _steps(
            _with_model(lambda m: (m / "config.json").write_text("{not json")),
            lambda f, p: _pool(f, "eval", _pool_rows()),
        ),
        r"cannot load the (tokenizer|model) of .*models/m",
    ),
    "truncated weights": Case(
        "evaluate",
        _steps(_with_model(_truncate_weights), lambda f, p: _pool(f, "eval", _pool_rows())),
        r"cannot load the model of .*models/m",
    ),
    "a corrupt base record": Case("merge", _adapter("{truncated"), r"medjson_base\.json cannot be read"),
    "an incomplete base record": Case("merge", _adapter({"base": "x"}), r"medjson_base\.json lacks \['revision'"),
    "missing adapter weights": Case(
        "merge",
        _adapter({"base": "x", "revision": None, "weights_sha256": None, "storage_dtype": "float32"}, weights=False),
        r"no adapter weights",
    ),
    "no SFT example fits max_length": Case(
        "sft",
        _steps(_sft_pools, _set("sft.trainer.max_length", 8)),
        r"no SFT example fits sft\.trainer\.max_length = 8",
    ),
    "empty predictions": Case("compare", _predictions, r"predictions are empty"),
    # Misleading errors: the message names the file actually given.
    "another params file": Case(
        "prepare",
        _set("prepare.sft_size", "many"),
        r"other-params\.yaml: `prepare\.sft_size` = 'many'",
        params_file="other-params.yaml",
    ),
}


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module", autouse=True)
def _tiny(tiny_model):
    TINY["model"] = tiny_model


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_with_a_clear_error_and_changes_nothing_else(name, tmp_path, tiny_model):
    case = CASES[name]
    params = _params(tiny_model)
    if case.stage == "sft":
        _pool(tmp_path, "sft", _pool_rows())
    case.prepare(tmp_path, params)
    (tmp_path / case.params_file).write_text(yaml.safe_dump(params, sort_keys=False))
    before = _snapshot(tmp_path)
    params_args = ["--params", case.params_file] if case.stage in READS_PARAMS else []
    result = subprocess.run(
        [sys.executable, "-m", f"medjson.stages.{case.stage}", *params_args, *ARGS[case.stage]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == case.exit_code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    error_lines = [line for line in output.splitlines() if " ERROR " in line]
    assert error_lines and re.search(case.message, error_lines[-1]), output[-3000:]
    changed = {path for path, digest in _snapshot(tmp_path).items() if before.get(path) != digest}
    changed |= set(before) - set(_snapshot(tmp_path))
    outputs = OUTPUTS[case.stage]
    outside = {p for p in changed if not p.startswith(outputs) and not any(o.startswith(p + "/") for o in outputs)}
    assert not outside, f"changed outside the stage's outputs: {sorted(outside)}"
    if name == "scratch folder without a run marker":
        assert (tmp_path / "checkpoints/sft/results-i-need.csv").read_text() == "a,b\n1,2\n"
        assert (tmp_path / "checkpoints/sft/checkpoint-5").is_dir()


@pytest.mark.parametrize("stage", sorted(READS_PARAMS))
def test_a_params_key_given_twice_stops_every_stage_reading_params(stage, tmp_path):
    """DVC refuses such a file; a stage run by hand must not quietly take the last value."""
    text = (PROJECT_ROOT / "params.yaml").read_text()
    assert "\nseed: " in text
    (tmp_path / "params.yaml").write_text(text.replace("\nseed: ", "\nseed: 1\nseed: ", 1))
    result = subprocess.run(
        [sys.executable, "-m", f"medjson.stages.{stage}", "--params", "params.yaml", *ARGS[stage]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "key `seed` appears twice" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
