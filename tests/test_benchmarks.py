"""Benchmarks: read in their own layouts, cleared of questions the models trained on, counted."""

from __future__ import annotations

import json

import pytest
from helpers import run_dvc

from medjson.core.prompts import build_messages
from medjson.core.questions import ExamQuestion
from medjson.data.pools import normalize_question, pool_record
from medjson.errors import ParamsError
from medjson.params import load_params
from medjson.stages.benchmark_data import split_leaked, training_texts
from medjson.workspace import PROJECT_ROOT, create_workspace, dvc

BENCHMARKS = PROJECT_ROOT / "data" / "benchmarks"


def _question(qid: str, text: str) -> ExamQuestion:
    return ExamQuestion(qid, text, ["a", "b", "c", "d"], "A", "Anatomy", "single", "")


def test_a_pool_record_keeps_the_question_as_asked_beside_its_prompt():
    question = ExamQuestion(
        "q1", "Line one\nA) looks like an option", ["w", "x", "y", "z"], "B", "Anatomy", "single", ""
    )
    record = pool_record(question, 0, 0.0, 0.0)
    assert (record["question"], record["options"]) == (question.question, question.options)
    assert record["messages"] == build_messages(question.question, question.options)


def test_leaked_questions_are_those_whose_normalised_text_was_trained_on(tmp_path):
    pools = tmp_path / "pools"
    pools.mkdir()
    for pool, text in (("sft", "Which NERVE supplies the deltoid?"), ("grpo", "What is the pH of blood?")):
        (pools / f"{pool}.jsonl").write_text(json.dumps(pool_record(_question(pool, text), 0, 0.5, 0.5)) + "\n")
    seen = training_texts(pools)
    asked = [_question("b1", "which nerve supplies the deltoid"), _question("b2", "Which nerve supplies the biceps?")]
    asked.append(_question("b3", "What is the pH of blood?"))
    kept, leaked = split_leaked(asked, seen)
    assert [q.id for q in kept] == ["b2"] and [q.id for q in leaked] == ["b1", "b3"]


def test_a_bad_benchmark_entry_is_a_params_error_naming_it(tmp_path):
    params = (PROJECT_ROOT / "params.yaml").read_text()
    (tmp_path / "p.yaml").write_text(params.replace("    layout: medqa_hub\n", "    layout: medqa_hf\n"))
    with pytest.raises(ParamsError, match=r"`benchmarks\.medqa\.layout` = 'medqa_hf'"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "q.yaml").write_text(params.replace("  mmlu_medical:", "  MMLU medical:"))
    with pytest.raises(ParamsError, match="benchmark name `MMLU medical`"):
        load_params(tmp_path / "q.yaml")
    (tmp_path / "r.yaml").write_text(params.replace("  mmlu_medical:", '  "mmlu_medical\\n":'))
    with pytest.raises(ParamsError, match="benchmark name `mmlu_medical\n`"):  # names are matched whole
        load_params(tmp_path / "r.yaml")


def _workspace(tmp_path, questions_path, benchmarks: dict):
    overrides = {
        "data": {"source": str(questions_path)},
        "prepare": {"sft_size": 100, "grpo_size": 40, "calibration_size": 20, "heldout_size": 8},
        "benchmarks": benchmarks,
    }
    return create_workspace(tmp_path / "ws", overrides)


@pytest.mark.slow
def test_benchmark_data_stages_read_each_layout_and_count_what_leaked(tmp_path, questions_path):
    local = {"split": None, "subsets": None}
    folder = _workspace(
        tmp_path,
        questions_path,
        {
            "medqa": {"source": str(BENCHMARKS / "medqa_demo.jsonl"), "layout": "medqa", **local},
            "mmlu_medical": {"source": str(BENCHMARKS / "medjson_medical_test.csv"), "layout": "auto", **local},
        },
    )
    run_dvc(folder, "repro", "benchmark_data")
    trained = {
        normalize_question(json.loads(line)["question"])
        for pool in ("sft", "grpo")
        for line in (folder / f"data/pools/{pool}.jsonl").open()
    }
    source = [json.loads(line) for line in (BENCHMARKS / "medqa_demo.jsonl").open()]
    expected_leaked = sum(normalize_question(row["question"]) in trained for row in source)
    report = json.loads((folder / "metrics/benchmarks/medqa/data.json").read_text())
    assert report["rows_read"] == len(source) == 23
    assert report["leaked_into_training"] == expected_leaked
    assert report["questions"] == len(source) - expected_leaked
    asked = [json.loads(line) for line in (folder / "data/benchmark_pools/medqa.jsonl").open()]
    assert len(asked) == report["questions"]
    assert not {normalize_question(r["question"]) for r in asked} & trained
    mmlu = json.loads((folder / "metrics/benchmarks/mmlu_medical/data.json").read_text())
    assert mmlu["questions"] == 20 and mmlu["subjects"] == {"Medjson Medical": 20}
    # The harness task evaluate scores them with: the layout's own, found for an auto-detected layout too.
    assert (report["layout"], report["harness_task"]) == ("medqa", "medqa_4options")
    assert (mmlu["layout"], mmlu["harness_task"]) == ("mmlu", "mmlu")
    assert "metrics/benchmarks/medqa/data.json" in run_dvc(folder, "metrics", "show")


@pytest.mark.slow
def test_a_benchmark_with_a_bad_row_fails_naming_the_row_and_its_key(tmp_path, questions_path):
    bad = tmp_path / "five.jsonl"
    row = json.loads((BENCHMARKS / "medqa_demo.jsonl").open().readline())
    row["options"]["E"] = "Another"
    bad.write_text(json.dumps(row) + "\n")
    folder = _workspace(
        tmp_path, questions_path, {"medqa": {"source": str(bad), "layout": "medqa", "split": None, "subsets": None}}
    )
    result = dvc(folder, "repro", "benchmark_data@medqa", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "five.jsonl:1" in output and "options_not_four" in output
    assert "benchmarks.medqa.bad_rows: drop" in output and "Traceback" not in output


@pytest.mark.slow
def test_a_benchmark_whose_every_row_is_dropped_says_how_many_were_read(tmp_path, questions_path):
    bad = tmp_path / "five.jsonl"
    rows = [json.loads(line) for line in (BENCHMARKS / "medqa_demo.jsonl").open()][:3]
    bad.write_text("".join(json.dumps({**r, "options": {**r["options"], "E": "Another"}}) + "\n" for r in rows))
    folder = _workspace(
        tmp_path, questions_path, {"medqa": {"source": str(bad), "layout": "medqa", "bad_rows": "drop"}}
    )
    result = dvc(folder, "repro", "benchmark_data@medqa", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "no question left to ask (3 rows read, 3 dropped as bad, 0 also in the training pools)" in output
