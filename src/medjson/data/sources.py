"""Reading four-option questions from the hub, JSON Lines, parquet or CSV, and validating each one.

MedMCQA comes in two layouts that differ only in how the answer `cop` is numbered:
- ``original``: the authors' release (``dev.json``), `cop` 1..4;
- ``hub``: ``openlifescienceai/medmcqa`` and its parquet exports, `cop` 0..3.
MedQA and MMLU layouts, and any other four-option set through a column mapping
(``medjson.data.layouts``), are read into MedMCQA's original layout row by row, then validated
the same way. A source is read in one layout, declared in params.yaml
or detected from the whole source; a row's layout is never guessed from the row itself.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medjson.core.choices import AUTO_LAYOUT, COLUMNS_LAYOUT, MEDMCQA_HUB, MEDMCQA_ORIGINAL
from medjson.core.prompts import LETTERS
from medjson.core.questions import ExamQuestion
from medjson.data.layouts import LAYOUT_SPECS, MEDMCQA_COLUMNS, ColumnMapping, column_converter
from medjson.data.readers import RawRow, is_local, read_hub, read_local
from medjson.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What validation did to one source: kept rows and every drop, by reason."""

    rows_read: int = 0
    dropped: Counter = field(default_factory=Counter)
    null_explanations: int = 0
    multi_questions: int = 0
    repeated_options: int = 0

    def merge(self, other: LoadReport) -> None:
        self.rows_read += other.rows_read
        self.dropped.update(other.dropped)
        self.null_explanations += other.null_explanations
        self.multi_questions += other.multi_questions
        self.repeated_options += other.repeated_options


def _columns(rows: list[RawRow]) -> set[str]:
    return set().union(*(row.data for row in rows[:1000]))


def check_columns(
    rows: list[RawRow], source: str, layout: str = MEDMCQA_ORIGINAL, mapping: ColumnMapping | None = None
) -> None:
    """A source with no rows, or whose rows lack its layout's columns, cannot be read in that layout."""
    if not rows:
        raise DataError(f"{source}: holds no rows; point data.source at a file with questions in it")
    required = mapping.required if mapping else LAYOUT_SPECS[layout].columns
    columns = _columns(rows)
    missing = [c for c in required if c not in columns]
    if missing:
        name = "column-mapped" if mapping else "MedMCQA" if LAYOUT_SPECS[layout].convert is None else layout
        raise DataError(
            f"{source}: rows have no {missing} column(s) (columns seen: {sorted(columns)[:12]}); "
            f"a {name} source needs {list(required)}"
        )


def detect_layout(rows: list[RawRow], declared: str, source: str, mapping: ColumnMapping | None = None) -> str:
    """The layout of a whole source: the declared one, the one its columns name, or for MedMCQA
    the one its `cop` range proves."""
    if declared != AUTO_LAYOUT:
        check_columns(rows, source, declared, mapping)
        return declared
    if rows and not set(MEDMCQA_COLUMNS) <= _columns(rows):
        found = [
            name
            for name, spec in LAYOUT_SPECS.items()
            if spec.convert is not None and set(spec.columns) <= _columns(rows)
        ]
        if len(found) == 1:
            return found[0]
    check_columns(rows, source)
    cops = {row.data.get("cop") for row in rows}
    has_zero, has_four = 0 in cops, 4 in cops
    if has_zero and not has_four:
        return MEDMCQA_HUB
    if has_four and not has_zero:
        return MEDMCQA_ORIGINAL
    integers = sorted(c for c in cops if isinstance(c, int) and not isinstance(c, bool))
    raise DataError(
        f"{source}: cannot tell whether `cop` is 0-based (hub) or 1-based (original): integer values seen "
        f"{integers}; set data.layout in params.yaml"
    )


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def row_fault(data: dict, offset: int) -> str | None:
    """Why a row cannot be used, or None when it can: the name says what is wrong."""
    if not isinstance(data.get("id"), str):
        return "id_missing" if data.get("id") is None else "id_not_a_string"
    if not _text(data["id"]):
        return "id_empty"
    if not isinstance(data.get("question"), str):
        return "question_missing" if data.get("question") is None else "question_not_a_string"
    if not _text(data["question"]):
        return "question_empty"
    options = [data.get(key) for key in ("opa", "opb", "opc", "opd")]
    if any(option is not None and not isinstance(option, str) for option in options):
        return "option_not_a_string"
    if any(not _text(option) for option in options):
        return "option_empty"
    cop = data.get("cop")
    if cop is None:
        return "cop_missing"
    if isinstance(cop, bool) or not isinstance(cop, int):
        return "cop_not_an_integer"
    if not 0 <= cop - offset < len(LETTERS):
        return "cop_out_of_range"
    return None


def validate_rows(
    rows: list[RawRow],
    layout: str,
    bad_rows: str,
    keep_multi: bool,
    report: LoadReport,
    mapping: ColumnMapping | None = None,
    bad_rows_key: str = "prepare.bad_rows",
) -> list[ExamQuestion]:
    """Turn raw rows into questions. A bad row raises (bad_rows=error) or is dropped and counted."""
    if layout == COLUMNS_LAYOUT:
        offset, convert = 1, column_converter(mapping)  # mapped rows come out in MedMCQA's original layout
    else:
        offset, convert = LAYOUT_SPECS[layout].cop_offset, LAYOUT_SPECS[layout].convert
    seen_ids: set[str] = set()
    questions = []
    for row in rows:
        report.rows_read += 1
        data = row.data
        converted = convert(data, row.where.rsplit("/", 1)[-1]) if convert else data
        fault = converted if isinstance(converted, str) else row_fault(converted, offset)
        data = data if isinstance(converted, str) else converted
        if fault is None and _text(data["id"]) in seen_ids:
            fault = "duplicate_id"
        if fault is not None:
            if bad_rows == "error":
                answer = f"cop={data.get('cop')!r}, " if "cop" in data else ""
                # The id as the file holds it (a row without one is named by its place alone).
                file_id = row.data.get(mapping.id if mapping and mapping.id else "id")
                named = f"row id {file_id!r}" if file_id is not None else "row"
                raise DataError(
                    f"{row.where}: {named} is unusable ({fault}: {answer}layout={layout}); fix the row, or set "
                    f"{bad_rows_key}: drop to drop and count such rows"
                )
            report.dropped[fault] += 1
            continue
        choice_type = _text(data.get("choice_type")) or "single"
        if choice_type == "multi":
            report.multi_questions += 1
            if not keep_multi:
                report.dropped["multi_choice_type"] += 1
                continue
        options = [_text(data[key]) for key in ("opa", "opb", "opc", "opd")]
        if len({o.lower() for o in options}) < len(options):
            report.repeated_options += 1  # kept: the gold letter still names one position
        explanation = _text(data.get("exp"))
        if not explanation:
            report.null_explanations += 1
        seen_ids.add(_text(data["id"]))
        questions.append(
            ExamQuestion(
                id=_text(data["id"]),
                question=_text(data["question"]),
                options=options,
                answer=LETTERS[data["cop"] - offset],
                subject=_text(data.get("subject_name")) or "Unknown",
                choice_type=choice_type,
                explanation=explanation,
            )
        )
    return questions


def load_source(
    source: str,
    layout: str,
    revision: str | None,
    split: str | None = None,
    mapping: ColumnMapping | None = None,
    subsets: list[str] | None = None,
) -> tuple[list[RawRow], str]:
    """Raw rows of a local file (whole) or one hub split (of each subset, in order), and their layout."""
    if layout == COLUMNS_LAYOUT and mapping is None:
        raise DataError(f"{source}: layout `columns` needs a column mapping (data.columns, or the benchmark's columns)")
    if is_local(source):
        rows = read_local(Path(source), csv_header=layout == COLUMNS_LAYOUT)
        return rows, detect_layout(rows, layout, source, mapping)
    split = split or "train"
    rows = [row for subset in subsets or [None] for row in read_hub(source, split, revision, subset)]
    check_columns(rows, f"{source}[{split}]", MEDMCQA_ORIGINAL if layout == AUTO_LAYOUT else layout, mapping)
    return rows, MEDMCQA_HUB if layout == AUTO_LAYOUT else layout
