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
- ``mmlu_hub``: ``cais/mmlu``: ``question``, ``choices`` (a list), 0-based ``answer``, ``subject``.
A question with other than four options (MedQA's five-option release, say) is the fault
``options_not_four``. Rows without an id get their place in the source (``file:line``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from medjson.prompts import LETTERS

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


CONVERTERS: dict[str, Callable[[dict, str], Converted]] = {
    "medqa": from_medqa,
    "medqa_hub": from_medqa_hub,
    "mmlu": from_mmlu_csv,
    "mmlu_hub": from_mmlu_hub,
}
# The columns that identify each layout in a source (auto-detection), and that it must have.
SIGNATURES = {
    "medqa": ("question", "options", "answer_idx"),
    "medqa_hub": ("sent1", "ending0", "ending1", "ending2", "ending3", "label"),
    "mmlu": ("cells", "subject"),
    "mmlu_hub": ("question", "choices", "answer"),
}


def mmlu_subject(path: Path) -> str:
    """``college_medicine_test.csv`` -> ``College Medicine``."""
    stem = path.stem
    for split in ("_test", "_dev", "_val", "_validation"):
        stem = stem.removesuffix(split)
    return stem.replace("_", " ").title()
