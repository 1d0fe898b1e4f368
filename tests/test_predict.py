"""`predict` from files and standard input: every row answered or reported, in input order, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT
from helpers import write_abstention_file

pytestmark = pytest.mark.slow  # every test runs the command in a subprocess, with a model

ROWS = [
    {"id": "q1", "question": "Which nerve supplies the deltoid?", "options": ["Radial", "Axillary", "Ulnar", "Median"]},
    {"id": "q2", "question": "Five options?", "options": ["a", "b", "c", "d", "e"]},
    {"question": "No id, options as an object", "options": {"A": "w", "B": "x", "C": "y", "D": "z"}},
    {"id": "q4", "options": ["a", "b", "c", "d"]},
]


def _predict(tmp_path, tiny_model, *args, stdin=None):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "medjson.predict",
            "--params",
            str(PROJECT_ROOT / "params.yaml"),
            "--model",
            str(tiny_model),
            *args,
        ],
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_predict_answers_good_rows_and_reports_bad_ones_in_order(tmp_path, tiny_model):
    source = tmp_path / "questions.jsonl"
    source.write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS[:2])
        + "{not json\n"
        + json.dumps(ROWS[2])
        + "\n"
        + json.dumps(ROWS[3])
        + "\n"
    )
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["q1", "q2", None, "4", "q4"]
    assert out[0]["valid"] and out[0]["predicted_category"] in "ABCD" and out[0]["meta"]["decoding"] == "constrained"
    assert out[1] == {"id": "q2", "row": 2, "error": "row 2: `options` must hold exactly 4 options, got 5"}
    assert out[2]["row"] == 3 and "not a JSON object" in out[2]["error"]
    assert out[3]["valid"]  # numbered by its row
    assert out[4]["error"] == "row 5: `question` must be a non-empty string"
    assert "5 rows: 2 answered (2 schema-valid), 3 bad rows" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_reads_csv_from_stdin_and_writes_stdout(tmp_path, tiny_model):
    csv = "id,question,A,B,C,D\nx1,Which nerve?,Radial,Axillary,Ulnar,Median\nx2,,a,b,c,d\n"
    result = _predict(tmp_path, tiny_model, "--input", "-", "--output", "-", "--decoding", "free", stdin=csv)
    assert result.returncode == 0, result.stderr[-2000:]
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in out] == ["x1", "x2"]
    assert out[0]["meta"]["decoding"] == "free" and "raw_output" in out[0]["meta"]  # the untrained model's prose
    assert out[0]["valid"] is False and out[0]["predicted_category"] is None
    assert out[1]["error"] == "row 2: `question` must be a non-empty string"


def test_predict_on_a_missing_file_is_one_clear_line(tmp_path, tiny_model):
    result = _predict(tmp_path, tiny_model, "--input", str(tmp_path / "absent.jsonl"))
    assert result.returncode == 1 and "absent.jsonl: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_marks_answers_below_the_fitted_threshold_as_abstained(tmp_path, tiny_model):
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps({**ROWS[0], "id": f"q{i}"}) + "\n" for i in range(3)))
    answer_all = write_abstention_file(tmp_path / "all.json", tiny_model, "constrained", threshold=0.0)
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--abstention", str(answer_all))
    assert result.returncode == 0, result.stderr[-2000:]
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 3
    for record in out:
        meta = record["meta"]
        assert meta["confidence_source"] == "letter" and meta["abstained"] is False
        assert record["confidence"] == meta["letter_probability"]  # temperature 1: the letter probability itself
        assert meta["stated_confidence"] is not None and meta["abstention_threshold"] == 0.0

    abstain_all = write_abstention_file(tmp_path / "none.json", tiny_model, "constrained", threshold=None)
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--abstention", str(abstain_all))
    assert [json.loads(line)["meta"]["abstained"] for line in result.stdout.splitlines()] == [True] * 3

    without = _predict(tmp_path, tiny_model, "--input", str(source), "--abstention", "none")
    meta = json.loads(without.stdout.splitlines()[0])["meta"]
    assert meta["abstained"] is None and meta["confidence_source"] == "stated"


def test_predict_refuses_an_abstention_file_fitted_for_another_decoding(tmp_path, tiny_model):
    source = tmp_path / "questions.jsonl"
    source.write_text(json.dumps(ROWS[0]) + "\n")
    free = write_abstention_file(tmp_path / "free.json", tiny_model, "free", threshold=0.5)
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--abstention", str(free))
    assert result.returncode == 1 and "free.json was fitted for" in result.stderr and "(free decoding)" in result.stderr
    assert "Traceback" not in result.stderr
