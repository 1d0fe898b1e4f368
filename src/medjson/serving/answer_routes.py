"""The service's own API: ``POST /v1/answer`` (one question) and ``POST /v1/answer/batch``.

Requests are validated before they queue: their models (``medjson.serving.protocol``) check types
and shapes, then ``Service.within_limits`` the lengths ``serve`` sets (characters, batch size) and
each prompt's length in tokens, so a bad request gets a 422 naming its field (with at most a short
excerpt of what was sent) and never reaches, or fails, a batch.
"""

# No `from __future__ import annotations`: FastAPI reads the request models from their annotations.

from fastapi import APIRouter, Request

from medjson.model.answer_record import AnswerRecord
from medjson.serving.protocol import BatchIn, BatchOut, QuestionIn

router = APIRouter()


@router.post("/v1/answer", response_model=AnswerRecord)
async def answer(question: QuestionIn, request: Request) -> AnswerRecord:
    """Answer one question; the answer always has the schema's three fields when `valid` is true."""
    service = request.app.state.service
    (record,), _ = await service.answer(request, service.within_limits([question]))
    return record


@router.post("/v1/answer/batch", response_model=BatchOut)
async def answer_batch(batch: BatchIn, request: Request) -> BatchOut:
    """Answer several questions; they join the same dynamic batches as single requests."""
    service = request.app.state.service
    records, _ = await service.answer(request, service.within_limits(batch.questions, where=("questions",)))
    return BatchOut(answers=records)
