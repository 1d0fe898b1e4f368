"""Other exams' published layouts, read row by row into MedMCQA's original layout.

Each converter takes one raw row and returns either a MedMCQA-original row (``opa``..``opd``,
``cop`` 1..4) that the common validation then checks, or the name of what is wrong with it:
- ``medqa``: MedQA-USMLE 4-option as released, JSON Lines: ``question``, ``options`` (an object
  with keys A-D), ``answer_idx`` (a letter), ``answer`` (that option's text: it must agree),
  ``meta_info``;
- ``medqa_hub``: ``GBaker/MedQA-USMLE-4-options-hf`` (lm-evaluation-harness's ``medqa_4options``):
  ``sent1``, ``ending0``..``ending3``, 0-based ``label``;
- ``mmlu``: MMLU's original CSV files, no header: question, four options, answer letter; the
  subject comes from the file name (``anatomy_test.csv``);
- ``mmlu_hub``: ``cais/mmlu``: ``question``, ``choices`` (a list), 0-based ``answer``, ``subject``;
- ``columns``: any other four-option set, read through a ``ColumnMapping`` from params.yaml
  (``data.columns`` or a benchmark's ``columns``): which field holds the question, the
  options (four fields, or one holding a list of four or an object with keys A-D) and the
  answer, and how the answer is written (a letter, a 0- or 1-based index, or the option's text).
A question with other than four options (MedQA's five-option release, say) is the fault
``options_not_four``. Rows without an id get their place in the source (``file:line``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medjson.core.choices import (
    ANSWER_ENCODINGS,
    COLUMNS_LAYOUT,
    MEDMCQA_HUB,
    MEDMCQA_ORIGINAL,
    MEDMCQA_TASK,
    MEDQA_TASK,
    MMLU_TASK,
)
from medjson.core.prompts import LETTERS
from medjson.errors import ParamsError

Converted = dict | str  # a MedMCQA-original row, or a fault name


def _row(qid, question, options: list, cop: int, subject: str, explanation: str = "") -> dict:
    return {
        "id": qid,
        "question": question,
        **dict(zip(("opa", "opb", "opc", "opd"), options)),
        "cop": cop,
        "subject_name": subject,
        "exp": explanation,
        "choice_type": "single",
    }


def from_medqa(data: dict, where: str) -> Converted:
    options = data.get("options")
    if not isinstance(options, dict):
        return "options_missing"
    if sorted(options) != list(LETTERS):
        return "options_not_four"
    letter = data.get("answer_idx")
    if letter not in LETTERS:
        return "answer_idx_not_a_letter"
    answer = data.get("answer")
    if isinstance(answer, str) and isinstance(options[letter], str) and answer.strip() != options[letter].strip():
        return "answer_disagrees_with_answer_idx"
    meta = data.get("meta_info")
    subject = f"USMLE {meta}" if isinstance(meta, str) and meta else "USMLE"
    return _row(
        data.get("id", where), data.get("question"), [options[k] for k in LETTERS], LETTERS.index(letter) + 1, subject
    )


def from_medqa_hub(data: dict, where: str) -> Converted:
    if "ending4" in data:
        return "options_not_four"
    label = data.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(LETTERS):
        return "label_out_of_range"
    options = [data.get(f"ending{i}") for i in range(len(LETTERS))]
    return _row(data.get("id", where), data.get("sent1"), options, label + 1, "USMLE")


def from_mmlu_csv(data: dict, where: str) -> Converted:
    cells = data["cells"]
    if len(cells) != len(LETTERS) + 2:
        return "options_not_four"
    letter = cells[-1].strip() if isinstance(cells[-1], str) else None
    if letter not in LETTERS:
        return "answer_not_a_letter"
    return _row(data.get("id", where), cells[0], cells[1:-1], LETTERS.index(letter) + 1, data["subject"])


def from_mmlu_hub(data: dict, where: str) -> Converted:
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != len(LETTERS):
        return "options_not_four"
    answer = data.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(LETTERS):
        return "answer_out_of_range"
    subject = data.get("subject")
    return _row(
        data.get("id", where),
        data.get("question"),
        choices,
        answer + 1,
        subject.replace("_", " ").title() if isinstance(subject, str) and subject else "MMLU",
    )


@dataclass(frozen=True)
class ColumnMapping:
    """Where a four-option question's parts sit in a row of some other set."""

    question: str
    options: str | list[str]  # four fields (A-D in order), or one field holding a list of four or an object A-D
    answer: str
    answer_encoding: str  # letter | index0 | index1 | text (the correct option's own text)
    id: str | None = None  # None: the row's place in the source
    subject: str | None = None  # None: "Unknown"
    explanation: str | None = None

    @property
    def required(self) -> tuple[str, ...]:
        options = [self.options] if isinstance(self.options, str) else self.options
        return (self.question, *options, self.answer)

    @classmethod
    def from_params(cls, raw: Any, where: str, source: Path | str, layout: str) -> ColumnMapping:
        """Checked the way params.yaml is: every key named, typed and allowed, or a ParamsError. A mapping
        is read only with the `columns` layout: given with another, it is an error, never ignored."""
        if layout != COLUMNS_LAYOUT:
            layout_key = where.rsplit(".", 1)[0] + ".layout"
            raise ParamsError(
                f"{source}: `{where}` is set, but `{layout_key}` is {layout!r}: a column mapping is read only with "
                f"layout: {COLUMNS_LAYOUT}; set that layout, or remove the mapping"
            )
        if not isinstance(raw, dict):
            raise ParamsError(f"{source}: `{where}` must be a mapping of question, options, answer, answer_encoding")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ParamsError(f"{source}: unknown key `{where}.{unknown[0]}`; known keys: {known}")
        for key in ("question", "options", "answer", "answer_encoding"):
            if key not in raw:
                raise ParamsError(f"{source}: missing key `{where}.{key}`")
        for key in ("question", "answer", "answer_encoding", "id", "subject", "explanation"):
            value = raw.get(key)
            if value is not None and not (isinstance(value, str) and value):
                raise ParamsError(f"{source}: `{where}.{key}` = {value!r} must be a column name")
        options = raw["options"]
        if not (isinstance(options, str) and options) and not (
            isinstance(options, list) and len(options) == len(LETTERS) and all(isinstance(o, str) for o in options)
        ):
            raise ParamsError(
                f"{source}: `{where}.options` = {options!r} must be one column name (holding a list of four) "
                "or a list of four column names"
            )
        if raw["answer_encoding"] not in ANSWER_ENCODINGS:
            raise ParamsError(
                f"{source}: `{where}.answer_encoding` = {raw['answer_encoding']!r}; choose one of {list(ANSWER_ENCODINGS)}"
            )
        return cls(**raw)


def _mapped_options(data: dict, mapping: ColumnMapping) -> list | str:
    if isinstance(mapping.options, list):
        return [data.get(column) for column in mapping.options]
    options = data.get(mapping.options)
    if isinstance(options, dict):
        return [options[k] for k in LETTERS] if sorted(options) == list(LETTERS) else "options_not_four"
    if not isinstance(options, list):
        return "options_missing"
    return options if len(options) == len(LETTERS) else "options_not_four"


def _answer_index(answer: Any, options: list, encoding: str) -> int | str:
    """0..3, or the fault of an answer that names no option."""
    if encoding == "letter":
        letter = answer.strip().upper() if isinstance(answer, str) else None
        return LETTERS.index(letter) if letter in LETTERS else "answer_not_a_letter"
    if encoding == "text":
        if not isinstance(answer, str):
            return "answer_not_text"
        matches = [i for i, o in enumerate(options) if isinstance(o, str) and o.strip() == answer.strip()]
        if len(matches) != 1:
            return "answer_text_matches_no_option" if not matches else "answer_text_matches_several_options"
        return matches[0]
    if isinstance(answer, str) and re.fullmatch(r"[0-9]+", answer.strip()):  # CSV cells are text; "²" is no index
        answer = int(answer.strip())
    if isinstance(answer, bool) or not isinstance(answer, int):
        return "answer_not_an_integer"
    index = answer - (1 if encoding == "index1" else 0)
    return index if 0 <= index < len(LETTERS) else "answer_out_of_range"


def column_converter(mapping: ColumnMapping) -> Callable[[dict, str], Converted]:
    """A converter for the ``columns`` layout that reads rows through ``mapping``."""

    def convert(data: dict, where: str) -> Converted:
        options = _mapped_options(data, mapping)
        if isinstance(options, str):
            return options
        index = _answer_index(data.get(mapping.answer), options, mapping.answer_encoding)
        if isinstance(index, str):
            return index
        qid = data.get(mapping.id) if mapping.id else where
        subject = data.get(mapping.subject) if mapping.subject else None
        explanation = data.get(mapping.explanation) if mapping.explanation else ""
        return _row(
            str(qid) if isinstance(qid, int) and not isinstance(qid, bool) else qid,
            data.get(mapping.question),
            options,
            index + 1,
            subject if isinstance(subject, str) and subject.strip() else "Unknown",
            explanation if isinstance(explanation, str) else "",
        )

    return convert


@dataclass(frozen=True)
class LayoutSpec:
    """How a source in one layout is read."""

    columns: tuple[str, ...]  # the columns it must have, which also identify it when detected
    convert: Callable[[dict, str], Converted] | None = None  # into MedMCQA's original layout; None: MedMCQA
    cop_offset: int = 1  # what MedMCQA's `cop` counts from, after conversion
    harness_task: str = MEDMCQA_TASK  # the lm-evaluation-harness task whose prompt scores its questions


MEDMCQA_COLUMNS = ("id", "question", "opa", "opb", "opc", "opd", "cop")

# Every layout but `columns` (read through its mapping: ``column_converter``), by its name in params.yaml.
LAYOUT_SPECS: dict[str, LayoutSpec] = {
    MEDMCQA_HUB: LayoutSpec(MEDMCQA_COLUMNS, cop_offset=0),
    MEDMCQA_ORIGINAL: LayoutSpec(MEDMCQA_COLUMNS),
    "medqa": LayoutSpec(("question", "options", "answer_idx"), from_medqa, harness_task=MEDQA_TASK),
    "medqa_hub": LayoutSpec(
        ("sent1", "ending0", "ending1", "ending2", "ending3", "label"), from_medqa_hub, harness_task=MEDQA_TASK
    ),
    "mmlu": LayoutSpec(("cells", "subject"), from_mmlu_csv, harness_task=MMLU_TASK),
    "mmlu_hub": LayoutSpec(("question", "choices", "answer"), from_mmlu_hub, harness_task=MMLU_TASK),
}


def harness_task_of(layout: str) -> str:
    """The harness task whose prompt fits a source read in ``layout`` (MedMCQA's for a mapped set)."""
    return LAYOUT_SPECS[layout].harness_task if layout in LAYOUT_SPECS else MEDMCQA_TASK


def mmlu_subject(path: Path) -> str:
    """``college_medicine_test.csv`` -> ``College Medicine``."""
    stem = path.stem
    for split in ("_test", "_dev", "_val", "_validation"):
        stem = stem.removesuffix(split)
    return stem.replace("_", " ").title()
