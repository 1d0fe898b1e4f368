"""The service's own API: ``POST /v1/answer`` (one question) and ``POST /v1/answer/batch``.

Requests are validated before they queue: the models below check types and shapes, then
``check_limits`` the lengths ``serve`` sets (characters, batch size) and each prompt's length in
tokens, so a bad request gets a 422 naming its field (with at most a short excerpt of what was
sent) and never reaches, or fails, a batch.
"""

# No `from __future__ import annotations`: FastAPI reads the request models from their annotations.

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from medjson.core.prompts import LETTERS
from medjson.core.questions import Question
from medjson.serving.http import no_surrogates

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(no_surrogates)]


class QuestionIn(BaseModel):
    id: Annotated[str, AfterValidator(no_surrogates)] | int | None = Field(
        default=None, description="echoed back in the answer"
    )
    question: Text = Field(description="at most serve.max_question_chars characters")
    options: list[Text] = Field(
        min_length=len(LETTERS), max_length=len(LETTERS), description="options A-D, each at most serve.max_option_chars"
    )


class BatchIn(BaseModel):
    questions: list[QuestionIn] = Field(min_length=1, description="at most serve.max_batch_items questions")


class Meta(BaseModel):
    model: str
    decoding: str
    latency_ms: float
    new_tokens: int
    finish_reason: str = Field(description="stop, or length: the token budget cut the answer")
    confidence_source: str = Field(description="what `confidence` is: stated, or the abstention file's (letter)")
    stated_confidence: float | None = None
    calibrated_confidence: float | None = None
    letter_probability: float | None = None
    abstained: bool | None
    abstention_threshold: float | None = None
    raw_output: str | None = None


class AnswerOut(BaseModel):
    id: str | None
    predicted_category: str | None
    confidence: float | None
    reason: str | None
    valid: bool
    error: str | None
    meta: Meta


class BatchOut(BaseModel):
    answers: list[AnswerOut]


def _too_long(loc: tuple, limit: int, value, what: str = "characters") -> dict:
    return {
        "type": "too_long",
        "loc": loc,
        "msg": f"should have at most {limit} {what}",
        "input": value,
    }


def check_limits(service, questions: list[QuestionIn], where: tuple = ()) -> list[Question]:
    """The questions to answer, or a 422 for every field over a ``serve`` limit (characters, then the
    prompt in tokens, ``serve.max_prompt_tokens``)."""
    settings, errors = service.settings, []
    if where and len(questions) > settings.max_batch_items:
        errors.append(_too_long(("body", *where), settings.max_batch_items, questions, "questions"))
    asked = []
    for index, q in enumerate(questions):
        at = ("body", *where, *((index,) if where else ()))
        if len(q.question) > settings.max_question_chars:
            errors.append(_too_long((*at, "question"), settings.max_question_chars, q.question))
        for letter, option in enumerate(q.options):
            if len(option) > settings.max_option_chars:
                errors.append(_too_long((*at, "options", letter), settings.max_option_chars, option))
        asked.append((at, Question(None if q.id is None else str(q.id), q.question, list(q.options))))
    if not errors:
        for at, question in asked:
            refusal = service.prompt_refusal(question)
            if refusal:
                errors.append(
                    {
                        "type": "too_many_tokens",
                        "loc": (*at, "question"),
                        "msg": refusal,
                        "input": question.question,
                    }
                )
    if errors:
        raise RequestValidationError(errors)
    return [question for _, question in asked]


router = APIRouter()


@router.post("/v1/answer", response_model=AnswerOut)
async def answer(question: QuestionIn, request: Request) -> dict:
    """Answer one question; the answer always has the schema's three fields when `valid` is true."""
    service = request.app.state.service
    (record,), _ = await service.answer(request, check_limits(service, [question]))
    return record


@router.post("/v1/answer/batch", response_model=BatchOut)
async def answer_batch(batch: BatchIn, request: Request) -> dict:
    """Answer several questions; they join the same dynamic batches as single requests."""
    service = request.app.state.service
    records, _ = await service.answer(request, check_limits(service, batch.questions, where=("questions",)))
    return {"answers": records}
