"""A four-option question, as a user asks it and as an exam source holds it.

``Question`` is what predict and the service answer: an optional id, the text and four
options. ``ExamQuestion`` is a question read from a labelled source (MedMCQA, MedQA, MMLU):
the same, with the gold letter, subject, choice type and explanation. ``read_question`` turns
one input record into a ``Question`` or says exactly which field is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from medjson.core.prompts import LETTERS
from medjson.errors import DataError

SURROGATE = "holds a lone surrogate (\\ud800-\\udfff), which is no character"


@dataclass(frozen=True)
class Question:
    id: str | None
    question: str
    options: list[str]


@dataclass(frozen=True)
class ExamQuestion(Question):
    id: str
    answer: str  # gold letter
    subject: str
    choice_type: str  # single | multi
    explanation: str  # "" where the source has none


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (U+D800-U+DFFF): no character, and never model input.
    JSON's ``"\\ud800"`` makes one; so does a byte that is not UTF-8, read with ``surrogateescape``."""
    return any("\ud800" <= char <= "\udfff" for char in text)


def _options(row: dict) -> list:
    if "options" in row:
        options = row["options"]
        if isinstance(options, dict):
            if sorted(options) != list(LETTERS):
                raise DataError(f"`options` must have the keys {list(LETTERS)}, got {sorted(options)}")
            return [options[letter] for letter in LETTERS]
        if not isinstance(options, list):
            raise DataError(f"`options` must be a list of 4 strings or an object with keys A-D, got {options!r:.80}")
        return options
    if all(letter in row for letter in LETTERS):
        return [row[letter] for letter in LETTERS]
    raise DataError("no options: give `options` (a list of 4) or the fields A, B, C and D")


def read_question(row: object, max_question_chars: int = 20_000, max_option_chars: int = 2_000) -> Question:
    """A question from one input record: a mapping with ``question``, four options (``options`` as a
    list of four or an object with keys A-D, or fields ``A``..``D``) and an optional ``id``; a
    ``DataError`` names the field at fault."""
    if not isinstance(row, dict):
        raise DataError(f"a question must be an object, got {type(row).__name__}")
    text = row.get("question")
    if not isinstance(text, str) or not text.strip():
        raise DataError("`question` must be a non-empty string")
    if len(text) > max_question_chars:
        raise DataError(f"`question` is {len(text)} characters, more than the limit of {max_question_chars}")
    if has_surrogate(text):
        raise DataError(f"`question` {SURROGATE}")
    options = _options(row)
    if len(options) != len(LETTERS):
        raise DataError(f"`options` must hold exactly {len(LETTERS)} options, got {len(options)}")
    for letter, option in zip(LETTERS, options):
        if not isinstance(option, str) or not option.strip():
            raise DataError(f"option {letter} must be a non-empty string")
        if len(option) > max_option_chars:
            raise DataError(f"option {letter} is {len(option)} characters, more than the limit of {max_option_chars}")
        if has_surrogate(option):
            raise DataError(f"option {letter} {SURROGATE}")
    qid = row.get("id")
    if qid is not None and not isinstance(qid, (str, int)):
        raise DataError(f"`id` must be a string or an integer, got {type(qid).__name__}")
    if isinstance(qid, str) and has_surrogate(qid):
        raise DataError(f"`id` {SURROGATE}")
    return Question(None if qid is None else str(qid), text.strip(), [o.strip() for o in options])
