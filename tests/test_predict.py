"""`predict` from files and standard input: every row answered or reported, in input order, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from constants import PROJECT_ROOT
from helpers import write_abstention_file

pytestmark = pytest.mark.slow  # every test runs the command in a subprocess, with a model

ROWS = [
    {"id": "q1", "question": "Which nerve supplies the deltoid?", "options": ["Radial", "Axillary", "Ulnar", "Median"]},
    {"id": "q2", "question": "Five options?", "options": ["a", "b", "c", "d", "e"]},
    {"question": "No id, options as an object", "options": {"A": "w", "B": "x", "C": "y", "D": "z"}},
    {"id": "q4", "options": ["a", "b", "c", "d"]},
]


def _command(tiny_model, *args) -> list[str]:
    """predict with the project's params and the tiny model; no abstention file unless one is given."""
    abstention = [] if "--abstention" in args else ["--abstention", "none"]
    params = ["--params", str(PROJECT_ROOT / "params.yaml")]
    return [sys.executable, "-m", "medjson.commands.predict", *params, "--model", str(tiny_model), *abstention, *args]


def _predict(tmp_path, tiny_model, *args, stdin=None):
    text = isinstance(stdin, str) or stdin is None
    return subprocess.run(
        _command(tiny_model, *args), cwd=tmp_path, input=stdin, capture_output=True, text=text, timeout=300
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
    # `--abstention none` (as _command gives every run without a file): nothing abstained, the stated confidence.
    assert out[0]["meta"]["abstained"] is None and out[0]["meta"]["confidence_source"] == "stated"
    assert out[0]["confidence"] == out[0]["meta"]["stated_confidence"]
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
    # Without an abstention file nothing is abstained and the confidence is the stated one: the first test.


def test_predict_finds_the_abstention_file_fitted_for_its_model_and_decoding_beside_it(tmp_path, tiny_model):
    import shutil

    workspace = tmp_path / "workspace"
    model = workspace / "models" / "sft_merged"
    shutil.copytree(tiny_model, model)
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    for name, decoding in (("sft", "free"), ("sft_constrained", "constrained")):
        (workspace / "calibration" / name).mkdir(parents=True)
        write_abstention_file(workspace / "calibration" / name / "abstention.json", model, decoding, threshold=0.0)
    source = tmp_path / "questions.jsonl"
    source.write_text(json.dumps(ROWS[0]) + "\n")

    def run(*args):
        result = _predict(tmp_path, model, "--input", str(source), "--abstention", "auto", *args)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.splitlines()[0]), result.stderr

    record, log = run("--decoding", "constrained")
    assert "calibration/sft_constrained/abstention.json (found beside the model)" in log
    assert record["meta"]["confidence_source"] == "letter" and record["meta"]["abstained"] is False
    assert record["confidence"] == record["meta"]["calibrated_confidence"] is not None
    # The free-decoding file for free decoding; the stated confidence when asked for, the file's beside it.
    stated, log = run("--decoding", "free", "--confidence", "stated")
    assert "calibration/sft/abstention.json (found beside the model)" in log
    assert stated["confidence"] == stated["meta"]["stated_confidence"]
    assert stated["meta"]["confidence_source"] == "stated" and stated["meta"]["abstention_threshold"] == 0.0

    elsewhere = _predict(tmp_path, tiny_model, "--input", str(source), "--abstention", "auto")
    assert elsewhere.returncode == 0 and "no abstention file for" in elsewhere.stderr
    assert json.loads(elsewhere.stdout.splitlines()[0])["meta"]["confidence_source"] == "stated"
    missing = _predict(tmp_path, model, "--input", str(source), "--abstention", "calibration/x/abstention.json")
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "`auto`" in missing.stderr


def test_predict_refuses_an_abstention_file_fitted_for_another_decoding(tmp_path, tiny_model):
    source = tmp_path / "questions.jsonl"
    source.write_text(json.dumps(ROWS[0]) + "\n")
    free = write_abstention_file(tmp_path / "free.json", tiny_model, "free", threshold=0.5)
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--abstention", str(free))
    assert result.returncode == 1 and "free.json was fitted for" in result.stderr and "(free decoding)" in result.stderr
    assert "Traceback" not in result.stderr


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _questions(path, count: int, prefix: str = "q") -> bytes:
    rows = [
        {"id": f"{prefix}{i}", "question": f"Which nerve, case {i}?", "options": ROWS[0]["options"]}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path.read_bytes()


@pytest.mark.parametrize("how", ["same path", "another path to it", "a hard link"])
def test_an_output_that_is_the_input_is_refused_before_the_model_loads(tmp_path, tiny_model, how):
    source = tmp_path / "questions.jsonl"
    before = _questions(source, 2)
    output = {"same path": source, "another path to it": tmp_path / "." / "questions.jsonl"}.get(how)
    if output is None:
        output = tmp_path / "linked.jsonl"
        output.hardlink_to(source)
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--output", str(output))
    assert result.returncode == 1 and "is the input file" in result.stderr, result.stderr[-2000:]
    assert "loading model" not in result.stderr and "Traceback" not in result.stderr
    assert source.read_bytes() == before


@pytest.mark.parametrize("output, message", [("folder", "is a folder"), ("missing/out.jsonl", "does not exist")])
def test_an_output_that_cannot_be_written_is_one_clear_line(tmp_path, tiny_model, output, message):
    (tmp_path / "folder").mkdir()
    source = tmp_path / "questions.jsonl"
    _questions(source, 1)
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--output", str(tmp_path / output))
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert "loading model" not in result.stderr and "Traceback" not in result.stderr


def test_a_full_disk_is_one_clear_line_and_keeps_what_was_written(tmp_path, tiny_model):
    """A file-size limit stands in for a full disk: the write fails with an OSError, as ENOSPC would."""
    import resource

    source = tmp_path / "questions.jsonl"
    _questions(source, 6)
    output = tmp_path / "answers.jsonl"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    result = subprocess.run(
        _command(tiny_model, "--input", str(source), "--output", str(output), "--batch-size", "1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
    )
    assert result.returncode == 1 and "cannot write" in result.stderr and "resumes" in result.stderr, result.stderr[
        -2000:
    ]
    assert "Traceback" not in result.stderr and not output.exists()
    assert (tmp_path / "answers.jsonl.partial").exists()


def test_a_killed_run_never_destroys_the_earlier_output_and_a_rerun_resumes(tmp_path, tiny_model):
    import signal
    import time

    source = tmp_path / "questions.jsonl"
    _questions(source, 40)
    output = tmp_path / "answers.jsonl"
    output.write_text('{"earlier": "complete output"}\n')
    partial = tmp_path / "answers.jsonl.partial"
    process = subprocess.Popen(
        _command(tiny_model, "--input", str(source), "--output", str(output), "--batch-size", "2"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.read_bytes().count(b"\n") >= 4):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert output.read_text() == '{"earlier": "complete output"}\n'  # the earlier output, untouched
    answered = partial.read_bytes().count(b"\n")
    assert 4 <= answered < 40
    again = _predict(tmp_path, tiny_model, "--input", str(source), "--output", str(output), "--batch-size", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        "kept from an earlier run" in again.stderr
        and f"{answered} rows were answered by an earlier run" in again.stderr
    )
    records = _lines(output)
    assert [r["id"] for r in records] == [f"q{i}" for i in range(40)] and all(r["valid"] for r in records)
    assert not partial.exists() and not (tmp_path / "answers.jsonl.partial.json").exists()


def test_a_partial_output_of_another_run_is_replaced_and_one_without_its_marker_is_refused(tmp_path, tiny_model):
    source = tmp_path / "questions.jsonl"
    _questions(source, 2)
    output = tmp_path / "answers.jsonl"
    stranger = tmp_path / "answers.jsonl.partial"
    stranger.write_text("somebody's notes\n")
    refused = _predict(tmp_path, tiny_model, "--input", str(source), "--output", str(output))
    assert refused.returncode == 1 and "was not written by predict" in refused.stderr
    assert "loading model" not in refused.stderr and "Traceback" not in refused.stderr  # refused before it loads
    assert stranger.read_text() == "somebody's notes\n"
    (tmp_path / "answers.jsonl.partial.json").write_text(json.dumps({"run": {"input": "another"}}))
    replaced = _predict(tmp_path, tiny_model, "--input", str(source), "--output", str(output))
    assert replaced.returncode == 0 and "answers of another run" in replaced.stderr
    assert [r["id"] for r in _lines(output)] == ["q0", "q1"]


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("kind, from_stdin", [("csv", False), ("jsonl", True)])
def test_a_byte_order_mark_is_read_as_nothing(tmp_path, tiny_model, kind, from_stdin):
    """Both formats, both sources (the two readers and the two ways in are independent of each other)."""
    if kind == "csv":
        data = BOM + b"id,question,A,B,C,D\nb1,Which nerve?,Radial,Axillary,Ulnar,Median\n"
    else:
        data = BOM + json.dumps({**ROWS[0], "id": "b1"}).encode() + b"\n"
    source = tmp_path / f"questions.{kind}"
    source.write_bytes(data)
    args = ("--input", "-") if from_stdin else ("--input", str(source))
    result = _predict(tmp_path, tiny_model, *args, stdin=data if from_stdin else None)
    stdout = result.stdout.decode() if isinstance(result.stdout, bytes) else result.stdout
    assert [json.loads(line)["id"] for line in stdout.splitlines()] == ["b1"]


def test_rows_that_cannot_be_read_exactly_are_refused_one_by_one(tmp_path, tiny_model):
    good = json.dumps({**ROWS[0], "id": "good"}).encode()
    lines = [
        good,
        b'{"id": "latin1", "question": "Caf\xe9?", "options": ["a", "b", "c", "d"]}',
        b'{"id": "surrogate", "question": "Which \\ud800 nerve?", "options": ["a", "b", "c", "d"]}',
        json.dumps({**ROWS[0], "id": "good"}).encode(),  # a repeated id
        json.dumps({**ROWS[0], "id": "after"}).encode(),
    ]
    source = tmp_path / "questions.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = _predict(tmp_path, tiny_model, "--input", str(source), "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    out = _lines(tmp_path / "out.jsonl")
    assert [r.get("row") for r in out] == [None, 2, 3, 4, None]
    assert out[0]["valid"] and out[4]["valid"] and out[4]["id"] == "after"
    assert "not valid UTF-8" in out[1]["error"] and "lone surrogate" in out[2]["error"]
    assert out[3]["error"] == "row 4: id 'good' repeats the id of row 1"
    assert "5 rows: 2 answered (2 schema-valid), 3 bad rows" in result.stderr


def test_a_csv_row_with_more_or_fewer_fields_than_the_header_is_refused(tmp_path, tiny_model):
    source = tmp_path / "questions.csv"
    source.write_text(
        "id,question,A,B,C,D\n"
        "c1,Which nerve, the one to the deltoid?,Radial,Axillary,Ulnar,Median\n"  # an unquoted comma
        "c2,Which nerve?,Radial,Axillary,Ulnar\n"
        'c3,"Which nerve, quoted?",Radial,Axillary,Ulnar,Median\n'
    )
    result = _predict(tmp_path, tiny_model, "--input", str(source))
    assert result.returncode == 0, result.stderr[-2000:]
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["error"] == "row 1: has 7 fields, the header has 6 (a comma inside a field must be quoted)"
    assert out[1]["error"].startswith("row 2: has 5 fields")
    assert out[2]["id"] == "c3" and out[2]["valid"]


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_batch_size_out_of_range_is_refused(tmp_path, tiny_model, value):
    result = _predict(tmp_path, tiny_model, "--input", "-", "--batch-size", value, stdin="")
    assert result.returncode == 2 and "--batch-size" in result.stderr and "Traceback" not in result.stderr


def _abstention_with(tmp_path, tiny_model, **changes):
    path = write_abstention_file(tmp_path / "abstention.json", tiny_model, "constrained", threshold=0.5)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))  # NaN is written as NaN, as a careless edit would
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"threshold": float("nan")}, r"`abstention\.threshold` = nan must be a finite number"),
        ({"threshold": 2}, r"`abstention\.threshold` = 2 is out of range"),
        ({"threshold": -1}, r"`abstention\.threshold` = -1 is out of range"),
        ({"temperature": -1.0}, r"`abstention\.temperature` = -1\.0 is out of range"),
        ({"temperature": 0}, r"`abstention\.temperature` = 0 is out of range"),
        ({"temperature": "hot"}, r"`abstention\.temperature` = 'hot' is not of type float"),
        ({"confidence": "vibes"}, r"`abstention\.confidence` = 'vibes'; choose one of"),
    ],
)
def test_a_broken_abstention_file_is_refused_before_the_model_loads(tmp_path, tiny_model, changes, message):
    import re

    path = _abstention_with(tmp_path, tiny_model, **changes)
    result = _predict(tmp_path, tiny_model, "--input", "-", "--abstention", str(path), stdin=json.dumps(ROWS[0]))
    assert result.returncode == 1 and re.search(message, result.stderr), result.stderr[-2000:]
    assert "loading model" not in result.stderr and "Traceback" not in result.stderr and not result.stdout


def test_a_named_abstention_file_that_does_not_exist_is_an_error(tmp_path, tiny_model):
    result = _predict(tmp_path, tiny_model, "--input", "-", "--abstention", "nowhere.json", stdin=json.dumps(ROWS[0]))
    assert result.returncode == 1 and "--abstention names nowhere.json, which does not exist" in result.stderr


def test_a_mismatched_abstention_file_names_the_one_that_fits(tmp_path, tiny_model):
    (tmp_path / "calibration" / "free").mkdir(parents=True)
    (tmp_path / "calibration" / "constrained").mkdir()
    free = write_abstention_file(tmp_path / "calibration/free/abstention.json", tiny_model, "free", threshold=0.5)
    fits = write_abstention_file(tmp_path / "calibration/constrained/abstention.json", tiny_model, "constrained", 0.5)
    result = _predict(tmp_path, tiny_model, "--input", "-", "--abstention", str(free), stdin=json.dumps(ROWS[0]))
    assert result.returncode == 1 and f"(this one fits: {fits})" in result.stderr, result.stderr[-2000:]


def test_a_params_file_with_a_key_given_twice_is_refused(tmp_path, tiny_model):
    params = tmp_path / "params.yaml"
    text = (PROJECT_ROOT / "params.yaml").read_text()
    assert "\n  port: " in text
    params.write_text(text.replace("\n  port: ", "\n  port: 1\n  port: ", 1))
    result = subprocess.run(
        [sys.executable, "-m", "medjson.commands.predict", "--params", str(params), "--input", "-"],
        cwd=tmp_path,
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "key `port` appears twice" in result.stderr and "Traceback" not in result.stderr
