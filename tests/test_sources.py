"""Both `cop` layouts, layout detection per source, and bad rows: error or counted drop."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import medmcqa_row, write_rows

from medjson.data.sources import (
    DataError,
    LoadReport,
    detect_layout,
    load_source,
    read_local,
    validate_rows,
)


def _questions(path, layout="auto", bad_rows="error", keep_multi=True, report=None):
    rows, resolved = load_source(str(path), layout, None)
    return validate_rows(rows, resolved, bad_rows, keep_multi, report or LoadReport()), resolved


def test_original_layout_is_one_based(tmp_path):
    path = write_rows(tmp_path / "orig.json", [medmcqa_row(i, cop=(i % 4) + 1) for i in range(8)])
    questions, layout = _questions(path)
    assert layout == "original"
    assert [q.answer for q in questions] == list("ABCDABCD")


def test_hub_layout_is_zero_based_in_jsonl_and_parquet(tmp_path):
    rows = [medmcqa_row(i, cop=i % 4) for i in range(8)]
    jsonl = write_rows(tmp_path / "hub.jsonl", rows)
    parquet = tmp_path / "hub.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    for path in (jsonl, parquet):
        questions, layout = _questions(path)
        assert layout == "hub"
        assert [q.answer for q in questions] == list("ABCDABCD")


def test_same_rows_read_under_each_declared_layout_shift_by_one(tmp_path):
    path = write_rows(tmp_path / "mid.json", [medmcqa_row(i, cop=1 + i % 3) for i in range(6)])
    original, _ = _questions(path, layout="original")
    hub, _ = _questions(path, layout="hub")
    assert [q.answer for q in original] == list("ABCABC")
    assert [q.answer for q in hub] == list("BCDBCD")


def test_ambiguous_layout_asks_for_a_declaration(tmp_path):
    path = write_rows(tmp_path / "mid.json", [medmcqa_row(i, cop=1 + i % 3) for i in range(6)])
    with pytest.raises(DataError, match="set data.layout"):
        detect_layout(read_local(path), "auto", str(path))


@pytest.mark.parametrize(
    "changes, fault",
    [
        ({"question": "  "}, "question_empty"),
        ({"question": 12}, "question_not_a_string"),
        ({"opc": ""}, "option_empty"),
        ({"opd": None}, "option_empty"),
        ({"opb": 7}, "option_not_a_string"),
        ({"cop": 5}, "cop_out_of_range"),
        ({"cop": "2"}, "cop_not_an_integer"),
        ({"cop": 2.0}, "cop_not_an_integer"),
        ({"cop": None}, "cop_missing"),
        ({"id": None}, "id_missing"),
        ({"id": 99}, "id_not_a_string"),
    ],
)
def test_bad_row_is_an_error_naming_its_id_and_fault(tmp_path, changes, fault):
    rows = [medmcqa_row(i, cop=(i % 4) + 1) for i in range(4)] + [medmcqa_row(99, **{"cop": 1, **changes})]
    path = write_rows(tmp_path / "bad.json", rows)
    with pytest.raises(DataError, match=fault) as err:
        _questions(path)
    assert "bad.json:5" in str(err.value)
    report = LoadReport()
    questions, _ = _questions(path, bad_rows="drop", report=report)
    assert len(questions) == 4 and report.dropped == {fault: 1}


def test_duplicate_id_and_multi_and_repeats_are_counted(tmp_path):
    rows = [medmcqa_row(i, cop=(i % 4) + 1) for i in range(4)]
    rows.append(medmcqa_row(0, cop=2))  # same id as row 0
    rows.append(medmcqa_row(7, cop=3, choice_type="multi", opb="alpha 7", exp=None))
    path = write_rows(tmp_path / "mixed.json", rows)
    report = LoadReport()
    questions, _ = _questions(path, bad_rows="drop", keep_multi=False, report=report)
    assert len(questions) == 4
    assert report.dropped == {"duplicate_id": 1, "multi_choice_type": 1}
    assert report.multi_questions == 1
    report = LoadReport()
    questions, _ = _questions(path, bad_rows="drop", keep_multi=True, report=report)
    assert len(questions) == 5 and report.repeated_options == 1 and report.null_explanations == 1
    assert questions[-1].explanation == ""


def test_not_json_lines_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"id": "a"}\n[1, 2\n')
    with pytest.raises(DataError, match="broken.json:2"):
        read_local(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_local(tmp_path / "absent.json")
