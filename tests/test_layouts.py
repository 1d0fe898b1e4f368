"""MedQA and MMLU, as released and as on the hub, read into the same questions as MedMCQA."""

from __future__ import annotations

import csv
import json

import pytest

from medjson.data.sources import LoadReport, detect_layout, read_local, validate_rows
from medjson.errors import DataError

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


# --- any other four-option set, through a column mapping (layout `columns`) -------------------

from medjson.data.layouts import ColumnMapping  # noqa: E402
from medjson.data.sources import load_source  # noqa: E402
from medjson.errors import ParamsError  # noqa: E402

OTHER = {"stem": "Which vessel?", "a": "Aorta", "b": "Vena cava", "c": "Portal vein", "d": "Pulmonary artery"}


def _mapping(**changes) -> ColumnMapping:
    raw = {"question": "stem", "options": ["a", "b", "c", "d"], "answer": "key", "answer_encoding": "letter"}
    return ColumnMapping.from_params({**raw, **changes}, "data.columns", "params.yaml", "columns")


def _read_mapped(path, mapping, bad_rows="error"):
    rows, layout = load_source(str(path), "columns", None, None, mapping)
    report = LoadReport()
    return validate_rows(rows, layout, bad_rows, True, report, mapping), report


@pytest.mark.parametrize(
    "encoding, key",
    [("letter", "C"), ("letter", " c "), ("index0", 2), ("index1", 3), ("index0", "2"), ("text", "Portal vein")],
)
def test_a_column_mapping_reads_each_answer_encoding(tmp_path, encoding, key):
    path = _jsonl(tmp_path / "other.jsonl", [{**OTHER, "key": key}])
    (question,), _ = _read_mapped(path, _mapping(answer_encoding=encoding))
    assert question.answer == "C" and question.options[2] == "Portal vein" and question.question == "Which vessel?"
    assert question.id.endswith("other.jsonl:1") and question.subject == "Unknown"


def test_a_column_mapping_reads_options_from_one_list_or_object_field_and_named_id_and_subject(tmp_path):
    rows = [
        {
            "q": "Which vessel?",
            "opts": ["Aorta", "Vena cava", "Portal vein", "Lung"],
            "ans": 0,
            "uid": 7,
            "area": "Anat",
        },
        {
            "q": "Which gland?",
            "opts": {"A": "Thyroid", "B": "Adrenal", "C": "Pituitary", "D": "Pineal"},
            "ans": 3,
            "uid": 8,
        },
    ]
    mapping = ColumnMapping.from_params(
        {
            "question": "q",
            "options": "opts",
            "answer": "ans",
            "answer_encoding": "index0",
            "id": "uid",
            "subject": "area",
        },
        "x",
        "p.yaml",
        "columns",
    )
    first, second = _read_mapped(_jsonl(tmp_path / "s.jsonl", rows), mapping)[0]
    assert (first.id, first.answer, first.subject) == ("7", "A", "Anat")
    assert (second.id, second.answer, second.options[3], second.subject) == ("8", "D", "Pineal", "Unknown")


def test_a_column_mapping_reads_a_csv_file_with_a_header(tmp_path):
    path = tmp_path / "other.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*OTHER, "key"])
        writer.writeheader()
        writer.writerow({**OTHER, "key": "4"})
    (question,), _ = _read_mapped(path, _mapping(answer_encoding="index1"))
    assert question.answer == "D" and question.id.endswith("other.csv:2")


@pytest.mark.parametrize(
    "changes, key, fault",
    [
        ({}, "E", "answer_not_a_letter"),
        ({"answer_encoding": "index0"}, 4, "answer_out_of_range"),
        ({"answer_encoding": "index1"}, 0, "answer_out_of_range"),
        ({"answer_encoding": "index0"}, 1.5, "answer_not_an_integer"),
        ({"answer_encoding": "text"}, "Liver", "answer_text_matches_no_option"),
        ({"answer_encoding": "text", "options": ["a", "a", "c", "d"]}, "Aorta", "answer_text_matches_several_options"),
        ({"options": "opts"}, "A", "options_missing"),
    ],
)
def test_a_mapped_row_that_names_no_option_is_an_error_or_a_counted_drop(tmp_path, changes, key, fault):
    path = _jsonl(tmp_path / "s.jsonl", [{**OTHER, "key": key, "opts": None}])
    mapping = _mapping(**changes)
    with pytest.raises(DataError, match=rf"s\.jsonl:1: .*{fault}"):
        _read_mapped(path, mapping)
    _, report = _read_mapped(path, mapping, bad_rows="drop")
    assert report.dropped[fault] == 1


def test_a_list_field_with_five_options_is_options_not_four(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"stem": "Q?", "opts": ["a", "b", "c", "d", "e"], "key": "A"}])
    _, report = _read_mapped(path, _mapping(options="opts"), bad_rows="drop")
    assert report.dropped == {"options_not_four": 1}


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"question": "q", "options": ["a", "b"], "answer": "k", "answer_encoding": "letter"},
            "list of four column names",
        ),
        (
            {"question": "q", "options": ["a", "b", "c", "d"], "answer": "k"},
            "missing key `data.columns.answer_encoding`",
        ),
        ({"question": "q", "options": "o", "answer": "k", "answer_encoding": "roman"}, "choose one of"),
        ({"question": "q", "options": "o", "answer": "k", "answer_encoding": "letter", "tag": 1}, "unknown key"),
        ({"question": "", "options": "o", "answer": "k", "answer_encoding": "letter"}, "must be a column name"),
        ("stem", "must be a mapping"),
    ],
)
def test_a_bad_column_mapping_is_a_params_error_naming_the_key(raw, message):
    with pytest.raises(ParamsError, match=message):
        ColumnMapping.from_params(raw, "data.columns", "params.yaml", "columns")


def test_a_source_without_the_mapped_columns_or_without_a_mapping_is_refused(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"stem": "Q?", "key": "A"}])
    with pytest.raises(DataError, match=r"no \['a', 'b', 'c', 'd'\] column"):
        _read_mapped(path, _mapping())
    with pytest.raises(DataError, match="layout `columns` needs a column mapping"):
        load_source(str(path), "columns", None)


@pytest.mark.parametrize("answer", ["²", "1.0", "-1", " 2x"])
def test_an_index_answer_that_is_not_a_plain_whole_number_is_the_rows_fault(tmp_path, answer):
    """Not a traceback, whatever the cell holds ("²".isdigit() is true in Python)."""
    from medjson.data.layouts import column_converter

    mapping = _mapping(answer_encoding="index1")
    converted = column_converter(mapping)({**OTHER, "key": answer}, "f:2")
    assert converted in ("answer_not_an_integer", "answer_out_of_range")


@pytest.mark.parametrize("layout", ["original", "auto", "mmlu"])
def test_a_column_mapping_with_another_layout_is_an_error_not_ignored(layout):
    raw = {"question": "q", "options": ["a", "b", "c", "d"], "answer": "k", "answer_encoding": "letter"}
    with pytest.raises(ParamsError, match=rf"`data\.columns` is set, but `data\.layout` is '{layout}'"):
        ColumnMapping.from_params(raw, "data.columns", "params.yaml", layout)


def test_a_row_error_names_the_row_and_the_id_as_the_file_holds_them(tmp_path):
    mmlu = tmp_path / "anatomy_test.csv"
    with mmlu.open("w", newline="") as f:
        csv.writer(f).writerows([["What?", "a", "b", "c", "d", "C"], ["Five?", "a", "b", "c", "d", "e", "A"]])
    with pytest.raises(DataError, match=r"anatomy_test\.csv:2: row is unusable \(options_not_four") as raised:
        _read(mmlu, "mmlu")
    assert "None" not in str(raised.value)  # MMLU has no ids: the line names the row
    mapped = _jsonl(tmp_path / "m.jsonl", [{**OTHER, "key": "A", "uid": "u1"}, {**OTHER, "key": "Q", "uid": "u2"}])
    with pytest.raises(DataError, match=r"m\.jsonl:2: row id 'u2' is unusable \(answer_not_a_letter"):
        _read_mapped(mapped, _mapping(id="uid"))
