"""MedQA and MMLU, as released and as on the hub, read into the same questions as MedMCQA."""

from __future__ import annotations

import csv
import json

import pytest

from medjson.errors import DataError
from medjson.sources import LoadReport, detect_layout, read_local, validate_rows

MEDQA = {
    "question": "A 23-year-old presents with fever. Which drug?",
    "options": {"A": "Aspirin", "B": "Penicillin", "C": "Insulin", "D": "Heparin"},
    "answer_idx": "B",
    "answer": "Penicillin",
    "meta_info": "step1",
}
MEDQA_HUB = {
    "id": "m1",
    "sent1": "Which nerve?",
    "ending0": "Radial",
    "ending1": "Axillary",
    "ending2": "Ulnar",
    "ending3": "Median",
    "label": 1,
}
MMLU_HUB = {
    "question": "Which bone?",
    "choices": ["Femur", "Tibia", "Ulna", "Radius"],
    "answer": 3,
    "subject": "college_medicine",
}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path, layout="auto", bad_rows="error"):
    rows = read_local(path)
    layout = detect_layout(rows, layout, str(path))
    report = LoadReport()
    return layout, validate_rows(rows, layout, bad_rows, True, report), report


@pytest.mark.parametrize(
    "row, layout, answer, subject",
    [
        (MEDQA, "medqa", "B", "USMLE step1"),
        (MEDQA_HUB, "medqa_hub", "B", "USMLE"),
        (MMLU_HUB, "mmlu_hub", "D", "College Medicine"),
    ],
)
def test_each_json_layout_is_detected_and_read(tmp_path, row, layout, answer, subject):
    detected, (question,), _ = _read(_jsonl(tmp_path / "s.jsonl", [row]))
    assert detected == layout and question.answer == answer and question.subject == subject
    assert len(question.options) == 4 and question.id


def test_mmlu_csv_takes_its_subject_from_the_file_name(tmp_path):
    path = tmp_path / "clinical_knowledge_test.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["What, then?", "a", "b", "c", "d", "C"], ["Next?", "w", "x", "y", "z", "A"]])
    layout, questions, _ = _read(path)
    assert layout == "mmlu" and [q.answer for q in questions] == ["C", "A"]
    assert questions[0].question == "What, then?" and questions[0].subject == "Clinical Knowledge"
    assert questions[0].id == "clinical_knowledge_test.csv:1"


@pytest.mark.parametrize(
    "row, layout, fault",
    [
        ({**MEDQA, "options": {**MEDQA["options"], "E": "Ibuprofen"}}, "medqa", "options_not_four"),
        ({**MEDQA, "answer": "Insulin"}, "medqa", "answer_disagrees_with_answer_idx"),
        ({**MEDQA, "answer_idx": "E"}, "medqa", "answer_idx_not_a_letter"),
        ({**MEDQA_HUB, "ending4": "Other"}, "medqa_hub", "options_not_four"),
        ({**MEDQA_HUB, "label": 4}, "medqa_hub", "label_out_of_range"),
        ({**MMLU_HUB, "choices": ["a", "b", "c"]}, "mmlu_hub", "options_not_four"),
        ({**MMLU_HUB, "answer": "D"}, "mmlu_hub", "answer_out_of_range"),
        ({**MEDQA, "question": ""}, "medqa", "question_empty"),
    ],
)
def test_a_bad_row_is_an_error_naming_it_or_a_counted_drop(tmp_path, row, layout, fault):
    good = {"medqa": MEDQA, "medqa_hub": MEDQA_HUB, "mmlu_hub": MMLU_HUB}[layout]
    path = _jsonl(tmp_path / "s.jsonl", [good, row])
    with pytest.raises(DataError, match=f"s.jsonl:2: .*{fault}.*layout={layout}"):
        _read(path, layout)
    _, questions, report = _read(path, layout, bad_rows="drop")
    assert len(questions) == 1 and report.dropped == {fault: 1}


def test_a_declared_layout_the_file_does_not_have_names_the_missing_columns(tmp_path):
    with pytest.raises(DataError, match=r"rows have no \['sent1'.*a medqa_hub source needs"):
        _read(_jsonl(tmp_path / "s.jsonl", [MEDQA]), "medqa_hub")
