"""OpenAI's API on the service: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``.

A chat request goes through the same limits, batcher and abstention file as ``/v1/answer``
(``medjson.serving.service``). With ``stream: true`` its content goes out as server-sent
``chat.completion.chunk`` deltas while the model writes (the first after the first token); a
client that hangs up stops its row at the next decoding step, streaming or not.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from medjson.core.choices import CONSTRAINED
from medjson.core.questions import Question
from medjson.model.answer_record import AnswerRecord
from medjson.params import ServeParams
from medjson.serving.batching import FINISHED, Ticket
from medjson.serving.client_text import excerpt
from medjson.serving.errors import ApiError, error_body
from medjson.serving.openai_requests import CHAT_ROUTE, check_chat_cost, read_chat_request, refusal
from medjson.serving.openai_responses import AnswerContent, ChunkStream
from medjson.serving.protocol import (
    ChatCompletion,
    ChatRequest,
    Completion,
    MedjsonFields,
    ModelCard,
    ModelList,
    QuestionIn,
)
from medjson.serving.service import Service, mark_client_gone

router = APIRouter()


def _read_body(raw: bytes, settings: ServeParams) -> tuple[dict, ChatRequest]:
    """The body parsed, within the chat bounds (counted first, before the costly schema check), and read."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise refusal("the body is not valid JSON") from None
    check_chat_cost(body, settings.max_chat_messages, settings.max_content_parts, settings.max_chat_chars)
    return body, read_chat_request(body, settings.model)


def _question(service: Service, body: dict, chat: ChatRequest) -> Question:
    """The question, under the same checks as /v1/answer's, each refusal a 400 naming its field."""
    where = "options" if "question" in body or "options" in body else "messages"
    try:
        (question,) = service.within_limits([QuestionIn(question=chat.question, options=chat.options)])
    except (ValidationError, RequestValidationError) as error:  # the types, then the serve limits
        raise refusal(f"{where}: {excerpt(error.errors()[0]['msg'])}", where) from None
    return question


def _limits(service: Service, chat: ChatRequest) -> tuple[int | None, int | None]:
    """The ticket's own token limit (below the service's), and the service's where the request asked for more."""
    most = service.settings.max_new_tokens
    if chat.max_tokens is None:
        return None, None
    return (chat.max_tokens, None) if chat.max_tokens < most else (None, most if chat.max_tokens > most else None)


def _completion(
    record: AnswerRecord, content: str, chat: ChatRequest, prompt_tokens: int, capped: int | None
) -> Completion:
    medjson = MedjsonFields.of(record, chat.ignored, capped)
    return Completion(content, record.meta.finish_reason, prompt_tokens, record.meta.new_tokens, medjson)


@router.post(CHAT_ROUTE)
async def chat_completions(request: Request):
    """The question in the last user message (or `question`/`options`), answered as the answer schema's
    JSON; `stream: true` sends it as server-sent events while the model writes."""
    service: Service = request.app.state.service
    # Parsing and checking a body of up to serve.max_body_bytes is CPU work: off the event loop, so that
    # every other request goes on being answered meanwhile.
    body, chat = await run_in_threadpool(_read_body, await request.body(), service.settings)
    question = _question(service, body, chat)
    kind = (body.get("response_format") or {}).get("type")
    if service.settings.decoding != CONSTRAINED and kind in ("json_object", "json_schema"):
        raise refusal(
            "this service decodes freely (serve.decoding: free) and cannot hold answers to a format: "
            "start it with --decoding constrained, or leave response_format out",
            "response_format",
        )
    prompt_tokens = service.answerer.prompt_tokens(question)
    max_tokens, capped = _limits(service, chat)
    if chat.stream:
        (ticket,) = service.submit([question], max_tokens)
        events = _events(service, request, ticket, chat, prompt_tokens, capped)
        return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
    (record,), (ticket,) = await service.answer(request, [question], max_tokens)
    content = AnswerContent(service.answerer, ticket).text(final=True)
    completion = _completion(record, content, chat, prompt_tokens, capped)
    return ChatCompletion.of(completion, service.settings.model).model_dump()


async def _events(service: Service, request: Request, ticket: Ticket, chat: ChatRequest, prompt_tokens, capped):
    chunks, content = ChunkStream(service.settings.model, chat.include_usage), AnswerContent(service.answerer, ticket)
    started = time.perf_counter()
    try:
        async for step in service.stream(ticket):
            text = content.delta(final=step is FINISHED)
            if text:
                yield chunks.delta(text)
    except ApiError as error:  # the timeout: the status went out with the first chunk, so the error is an event
        for event in chunks.error(error_body(CHAT_ROUTE, error.status, error.message, code=error.code)):
            yield event
        return
    except asyncio.CancelledError:
        mark_client_gone(request)
        raise
    try:
        record = ticket.answer.result()
    except Exception:  # the batcher logged the generation's failure
        body = error_body(
            CHAT_ROUTE, 500, "generation failed for this request's batch; the error is in the service's log"
        )
        for event in chunks.error(body):
            yield event
        return
    service.metrics.answered([record])
    record = record.with_latency(round((time.perf_counter() - started) * 1000, 1))
    for event in chunks.end(_completion(record, content.sent, chat, prompt_tokens, capped)):
        yield event


@router.get("/v1/models")
async def models(request: Request) -> dict:
    """OpenAI's model list: the one model this service answers with."""
    service = request.app.state.service
    return ModelList(data=[ModelCard(id=service.settings.model, created=service.started)]).model_dump()


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, request: Request) -> dict:
    """OpenAI's model object, for the model this service answers with (the openai client's models.retrieve)."""
    service = request.app.state.service
    if model_id != service.settings.model:
        raise ApiError(
            404,
            f"the model {excerpt(model_id)!r} does not exist here; this service serves {service.settings.model!r}",
            "model",
            "model_not_found",
        )
    return ModelCard(id=service.settings.model, created=service.started).model_dump()
