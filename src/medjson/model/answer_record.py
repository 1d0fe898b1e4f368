"""The record of one answer: what ``Answerer.answer`` returns, predict writes (one JSON line each)
and every route of the service returns or reads, typed once here.

``to_json`` is the written form: the schema's three fields (None where the model's output is not
a schema-valid answer), the verdict, and ``meta``; ``meta.raw_output`` only where the answer is
invalid (the model's own text, to see what it wrote instead).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class AnswerMeta:
    model: str  # the weights, as the command named them
    decoding: str  # free | constrained
    latency_ms: float  # the generation's; the service's own for a request
    new_tokens: int
    finish_reason: str  # stop, or length: the token budget cut the answer
    confidence_source: str  # what the record's `confidence` is: stated (the model's number) or the abstention file's
    stated_confidence: float | None  # what the model wrote
    calibrated_confidence: float | None  # the abstention file's; None: no file
    letter_probability: float | None  # the model's own probability of the letter it wrote, renormalised over A-D
    abstained: bool | None  # below the fitted threshold: answered, but not to be trusted; None: no file
    abstention_threshold: float | None
    raw_output: str | None = None  # the model's text where it is no schema-valid answer


@dataclass(frozen=True)
class AnswerRecord:
    id: str | None
    predicted_category: str | None
    confidence: float | None  # the one `meta.confidence_source` names
    reason: str | None
    valid: bool  # a schema-valid answer
    error: str | None
    meta: AnswerMeta

    def with_latency(self, latency_ms: float) -> AnswerRecord:
        return dataclasses.replace(self, meta=dataclasses.replace(self.meta, latency_ms=latency_ms))

    def to_json(self) -> dict:
        record = dataclasses.asdict(self)
        if self.valid:
            del record["meta"]["raw_output"]
        return record
