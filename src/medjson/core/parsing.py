"""The one parser of model output, shared by the GRPO rewards and the evaluation.

Strict reading is the headline: the whole completion, stripped of surrounding white
space, must be one JSON object. A lenient reading (think block, markdown fence,
text around the object) is reported separately so that it can show how much a
looser post-processor would recover, without ever inflating the strict metrics.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from medjson.core.prompts import LETTERS

SCHEMA_KEYS = frozenset({"predicted_category", "confidence", "reason"})

# The answer's JSON schema, as the service publishes it (GET /v1/schema); ``schema_errors``
# checks exactly this, and constrained decoding generates a subset of it.
ANSWER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "MedjsonAnswer",
    "type": "object",
    "properties": {
        "predicted_category": {"type": "string", "enum": list(LETTERS)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": sorted(SCHEMA_KEYS),
    "additionalProperties": False,
}

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class ParsedAnswer:
    """What one completion says, read strictly, plus what a lenient reading recovers."""

    valid_json: bool  # the whole completion is one JSON object
    schema_valid: bool  # ... with exactly the three keys, each of the right type and range
    predicted: str | None  # the letter, only when schema_valid
    confidence: float | None  # only when schema_valid
    reason: str | None  # only when schema_valid
    lenient_schema_valid: bool  # schema-valid only after stripping think blocks, fences or text around it
    lenient_predicted: str | None  # the letter a lenient reading finds


# A lenient reading tries at most this many `{` as the start of an object, so it stays
# linear in the length of the text whatever the model wrote (a megabyte of `{`, say).
LENIENT_MAX_STARTS = 32


class _NotStrictJson(ValueError):
    """Valid to Python's json module, but not strict JSON: a repeated key, NaN or Infinity."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise _NotStrictJson("repeated key")
    return dict(pairs)


def _no_constants(name: str) -> float:
    raise _NotStrictJson(f"{name} is not JSON")


def _integer(digits: str) -> int | float:
    # Python refuses to convert integers of over 4,300 digits; such a number is still JSON.
    return int(digits) if len(digits) < 4000 else float(digits)


_STRICT = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constants, parse_int=_integer)


def _load_object(text: str) -> dict | None:
    """The object ``text`` is, read strictly: no repeated keys, no NaN or Infinity; else None."""
    try:
        value = _STRICT.decode(text)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and the strictness checks
        return None
    return value if isinstance(value, dict) else None


def schema_errors(answer: dict) -> list[str]:
    """Every way ``answer`` breaks the schema; empty when it is valid."""
    errors = []
    keys = set(answer)
    if keys != SCHEMA_KEYS:
        missing, extra = sorted(SCHEMA_KEYS - keys), sorted(keys - SCHEMA_KEYS)
        errors.append(f"keys differ from the schema (missing {missing}, extra {extra})")
    letter = answer.get("predicted_category")
    if letter not in LETTERS:
        errors.append(f"predicted_category {letter!r} is not one of {'/'.join(LETTERS)}")
    confidence = answer.get("confidence")
    # bool is an int in Python; a boolean confidence is a schema error, not 1.0.
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        errors.append(f"confidence {confidence!r} is not a number")
    elif not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        errors.append(f"confidence {confidence!r} is outside 0..1")
    if not isinstance(answer.get("reason"), str):
        errors.append("reason is not a string")
    return errors


def _lenient_object(text: str) -> dict | None:
    """The first JSON object found after removing think blocks and fences."""
    text = _THINK_BLOCK.sub("", text)
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    for _ in range(LENIENT_MAX_STARTS):
        if start < 0:
            break
        try:
            value, _ = _STRICT.raw_decode(text, start)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def parse_answer(completion: str) -> ParsedAnswer:
    """Read one completion; never raises, whatever the text."""
    strict = _load_object(completion.strip())
    schema_valid = strict is not None and not schema_errors(strict)
    lenient = strict if schema_valid else _lenient_object(completion)
    lenient_valid = lenient is not None and not schema_errors(lenient)
    return ParsedAnswer(
        valid_json=strict is not None,
        schema_valid=schema_valid,
        predicted=strict["predicted_category"] if schema_valid else None,
        confidence=float(strict["confidence"]) if schema_valid else None,
        reason=strict["reason"] if schema_valid else None,
        lenient_schema_valid=lenient_valid,
        lenient_predicted=lenient["predicted_category"] if lenient_valid else None,
    )


@dataclass(frozen=True)
class Answer:
    """One generated answer, read: its text, the strict reading, and the model's own A-D distribution.

    The letter probabilities are kept only for a schema-valid answer: without a letter written
    there is no letter whose probability they would measure.
    """

    text: str
    new_tokens: int  # up to and including the end-of-turn token
    parsed: ParsedAnswer
    letter_probs: tuple[float, ...] | None  # A-D renormalised over the four, at the step that wrote the letter

    @classmethod
    def read(cls, text: str, new_tokens: int, letter_probs: tuple[float, ...] | None) -> Answer:
        parsed = parse_answer(text)
        # A non-finite probability (logits that overflowed in fp16) measures nothing: kept as none.
        measured = letter_probs is not None and all(math.isfinite(p) for p in letter_probs)
        return cls(text, new_tokens, parsed, letter_probs if parsed.schema_valid and measured else None)

    @property
    def letter_probability(self) -> float | None:
        """The model's probability of the letter it wrote: a second confidence, beside the stated one."""
        return None if self.letter_probs is None else self.letter_probs[LETTERS.index(self.parsed.predicted)]
