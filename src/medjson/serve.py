"""`medjson serve`: an HTTP API that answers questions with schema-valid JSON.

    medjson serve --model models/grpo_merged          # or: python -m medjson.serve
    curl -s localhost:8000/v1/answer -H 'content-type: application/json' \
        -d '{"question": "Which nerve supplies the deltoid?", "options": ["Radial", "Axillary", "Ulnar", "Median"]}'

Endpoints: ``POST /v1/answer`` (one question), ``POST /v1/answer/batch`` (up to
``serve.max_batch_items``), ``GET /health``, ``GET /v1/schema`` (the answer's JSON schema),
OpenAI's ``POST /v1/chat/completions`` and ``GET /v1/models`` (``medjson.serving.openai_api``:
any OpenAI client, structured output and streaming included), ``GET /metrics`` (Prometheus),
and the OpenAPI docs at ``/docs`` (served locally: no CDN needed) and ``/openapi.json``.
With API keys configured (``MEDJSON_API_KEYS`` or ``serve.api_keys_file``), every route but
``/health`` needs ``Authorization: Bearer <key>``.

Concurrent requests share the model through dynamic batching: the first waiting question
opens a batch, which takes whatever else arrives within ``serve.max_wait_ms``, up to
``serve.max_batch_size`` questions, and runs as one batched generation while the next batch
gathers. Requests are validated before they queue, lengths in characters and the prompt in
tokens, so a bad one gets a 422 naming its field (with at most a short excerpt of what was sent)
and never reaches, or fails, a batch. Every request ends within ``serve.request_timeout_s`` (a
504 otherwise), and a question whose request timed out stops generating at once, so it slows
no one else. Slow clients hold nothing: request headers must arrive within
``serve.header_timeout_s`` and a body (at most ``serve.max_body_bytes``) within
``serve.body_timeout_s``. Settings come from the ``serve`` section of ``params.yaml``, and the
command line overrides them.
"""

# No `from __future__ import annotations` here: FastAPI reads the request models defined inside
# create_app from their annotations at definition time.

import argparse
import asyncio
import dataclasses
import logging
import time
import typing
from contextlib import asynccontextmanager
from typing import Annotated, Any

from medjson.cli import run_stage
from medjson.core.choices import CONSTRAINED
from medjson.core.parsing import ANSWER_SCHEMA
from medjson.core.prompts import LETTERS
from medjson.core.questions import Question
from medjson.errors import ParamsError
from medjson.model.answering import Answerer, abstention_setting, read_abstention
from medjson.params import ServeParams, build_section, load_params
from medjson.serving.auth import ApiKeys, is_loopback, load_api_keys
from medjson.serving.batching import Batcher
from medjson.serving.http import (
    BodyLimits,
    excerpt,
    header_timeout_protocol,
    no_surrogates,
    validation_error_response,
)
from medjson.serving.metrics import RequestMetrics, ServiceMetrics
from medjson.serving.openai_api import (
    CHAT_ROUTE,
    ChatRequestError,
    Completion,
    answer_content,
    completion_object,
    error_body,
    extension,
    read_chat_request,
    stream_events,
)

log = logging.getLogger("medjson.serve")


def create_app(settings: ServeParams, answerer: Answerer, metrics: ServiceMetrics):
    """The FastAPI application around a loaded ``Answerer``; its batcher starts with the server."""
    from fastapi import HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from fastapi_offline import FastAPIOffline
    from pydantic import AfterValidator, BaseModel, Field, StringConstraints, ValidationError

    Text = AfterValidator(no_surrogates)
    Option = Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=settings.max_option_chars), Text
    ]

    class QuestionIn(BaseModel):
        id: Annotated[str, Text] | int | None = Field(default=None, description="echoed back in the answer")
        question: Annotated[
            str, StringConstraints(strip_whitespace=True, min_length=1, max_length=settings.max_question_chars), Text
        ]
        options: list[Option] = Field(min_length=len(LETTERS), max_length=len(LETTERS), description="options A-D")

    class BatchIn(BaseModel):
        questions: list[QuestionIn] = Field(min_length=1, max_length=settings.max_batch_items)

    class Meta(BaseModel):
        model: str
        decoding: str
        latency_ms: float
        new_tokens: int
        confidence_source: str
        stated_confidence: float | None = None
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

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(
            answerer, settings.max_batch_size, settings.max_wait_ms, on_batch=metrics.batch_size.observe
        )
        metrics.watch_queue(state["batcher"].queue.qsize)
        state["started"] = int(time.time())
        task = asyncio.create_task(state["batcher"].run())
        log.info(
            "serving %s (%s decoding) on http://%s:%d", settings.model, settings.decoding, settings.host, settings.port
        )
        yield
        task.cancel()
        state["batcher"].executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(
        title="medjson",
        summary="Medical multiple-choice questions answered as strict JSON",
        version="1",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def refuse(request, error: RequestValidationError):
        return validation_error_response(error.errors())

    def too_long(tokens: int) -> str | None:
        """Why a prompt of this many tokens is refused; None when it fits serve.max_prompt_tokens."""
        if tokens <= settings.max_prompt_tokens:
            return None
        return f"the prompt is {tokens} tokens, more than serve.max_prompt_tokens = {settings.max_prompt_tokens}"

    def within_token_limit(questions: list[Question], where: tuple) -> None:
        """A 422 for any question whose prompt is longer in tokens than serve.max_prompt_tokens."""
        errors = []
        for index, question in enumerate(questions):
            refusal = too_long(answerer.prompt_tokens(question))
            if refusal:
                loc = ("body", *where, *((index,) if where else ()), "question")
                errors.append(
                    {"type": "too_many_tokens", "loc": loc, "msg": refusal, "input": excerpt(question.question)}
                )
        if errors:
            raise RequestValidationError(errors)

    def asked(questions: list[QuestionIn]) -> list[Question]:
        return [Question(None if q.id is None else str(q.id), q.question, list(q.options)) for q in questions]

    async def answer_questions(questions: list[Question]) -> list[dict]:
        """The batcher's records for checked questions, within serve.request_timeout_s (else a 504)."""
        started = time.perf_counter()
        pending = [state["batcher"].submit(question) for question in questions]
        try:
            records = await asyncio.wait_for(asyncio.gather(*pending), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no answer within serve.request_timeout_s = {settings.request_timeout_s} s")
        metrics.answered(records)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return [{**r, "meta": {**r["meta"], "latency_ms": latency_ms}} for r in records]

    async def answer_all(questions: list[QuestionIn], where: tuple = ()) -> list[dict]:
        questions = asked(questions)
        within_token_limit(questions, where)
        return await answer_questions(questions)

    @app.post("/v1/answer", response_model=AnswerOut)
    async def answer(question: QuestionIn) -> dict:
        """Answer one question; the answer always has the schema's three fields when `valid` is true."""
        (record,) = await answer_all([question])
        return record

    @app.post("/v1/answer/batch", response_model=BatchOut)
    async def answer_batch(batch: BatchIn) -> dict:
        """Answer several questions; they join the same dynamic batches as single requests."""
        return {"answers": await answer_all(batch.questions, where=("questions",))}

    @app.get("/health")
    async def health() -> dict:
        batcher = state.get("batcher")
        return {
            "status": "ok" if batcher else "loading",
            "model": settings.model,
            "decoding": settings.decoding,
            "max_batch_size": settings.max_batch_size,
            "abstention": settings.abstention if batcher and batcher.answerer.abstention else None,
            "abstention_threshold": _threshold(batcher.answerer) if batcher else None,
            "queued": batcher.queue.qsize() if batcher else 0,
            "batches_run": batcher.batches if batcher else 0,
        }

    @app.get("/v1/schema")
    async def schema() -> dict:
        """The JSON schema every valid answer follows."""
        return ANSWER_SCHEMA

    def openai_error(error: ChatRequestError):
        return JSONResponse(error_body(error.message, error.param, error.code), status_code=error.status)

    @app.post(CHAT_ROUTE)
    async def chat_completions(request: Request):
        """OpenAI's chat completions: the question in the last user message (or `question`/`options`),
        answered as the answer schema's JSON; `stream: true` sends it as server-sent events."""
        try:
            body = await request.json()
        except ValueError:
            return openai_error(ChatRequestError("the body is not valid JSON"))
        try:
            chat = read_chat_request(body, settings.model)
            (question,) = asked([QuestionIn(question=chat.question, options=chat.options)])
            prompt_tokens = answerer.prompt_tokens(question)
            refusal = too_long(prompt_tokens)
            if refusal:
                raise ChatRequestError(refusal, "messages")
            if settings.decoding != CONSTRAINED and body.get("response_format") is not None:
                raise ChatRequestError(
                    "this service decodes freely (serve.decoding: free) and cannot hold answers to a format: "
                    "start it with --decoding constrained, or leave response_format out",
                    "response_format",
                )
        except ChatRequestError as error:
            return openai_error(error)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "messages"
            return openai_error(ChatRequestError(f"{field}: {excerpt(first['msg'])}", field))
        (record,) = await answer_questions([question])
        completion = to_completion(record, chat, prompt_tokens)
        if chat.stream:
            events = stream_events(completion, settings.model, chat.include_usage)
            return StreamingResponse(iter(events), media_type="text/event-stream")
        return completion_object(completion, settings.model)

    def to_completion(record: dict, chat, prompt_tokens: int) -> Completion:
        """The record as OpenAI's client reads it, cut at the request's max_tokens where it asks for fewer."""
        content, completion_tokens = answer_content(record), record["meta"]["new_tokens"]
        # Free decoding that ran to the service's limit without ending stopped for length.
        finish = "length" if not record["valid"] and completion_tokens >= settings.max_new_tokens else "stop"
        limit = chat.max_tokens
        if limit is not None and completion_tokens > limit:
            ids = answerer.tokenizer(content, add_special_tokens=False)["input_ids"][:limit]
            content, completion_tokens, finish = answerer.tokenizer.decode(ids), limit, "length"
        capped = settings.max_new_tokens if limit is not None and limit > settings.max_new_tokens else None
        return Completion(content, finish, prompt_tokens, completion_tokens, extension(record, chat.ignored, capped))

    @app.get("/v1/models")
    async def models() -> dict:
        """OpenAI's model list: the one model this service answers with."""
        created = state.get("started", int(time.time()))
        return {
            "object": "list",
            "data": [{"id": settings.model, "object": "model", "created": created, "owned_by": "medjson"}],
        }

    @app.get("/metrics")
    async def prometheus_metrics():
        """Requests by route and status, latency and batch-size histograms, queue depth, tokens, abstentions."""
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    return app


def warn_if_open(host: str, keys: list[str]) -> None:
    """A loud line when the service listens beyond this machine and anyone reaching it may use it."""
    if not keys and not is_loopback(host):
        log.warning(
            "serving on %s with no API key: anyone who can reach it can use it; set MEDJSON_API_KEYS or "
            "serve.api_keys_file",
            host,
        )


def service_app(settings: ServeParams, answerer: Answerer, keys: list[str]):
    """The whole ASGI stack: metrics count every request, keys are checked before any body is read,
    bodies are bounded, then the application."""
    metrics = ServiceMetrics()
    application = create_app(settings, answerer, metrics)
    metrics.known_routes = {route.path for route in application.routes}
    app = BodyLimits(application, settings.max_body_bytes, settings.body_timeout_s)
    return RequestMetrics(ApiKeys(app, keys), metrics)


def _threshold(answerer: Answerer) -> float | None:
    """The abstention threshold the service marks answers by; None without a file (or when none was reached)."""
    if answerer.abstention is None or answerer.abstention.threshold is None:
        return None
    return round(answerer.abstention.threshold, 4)


def settings_from(argv: list[str] | None = None) -> tuple[ServeParams, Any, str]:
    """The serve section of the params file, with every key overridable by a flag of the same name;
    the parameters, and who named the abstention file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    hints = typing.get_type_hints(ServeParams)
    for f in dataclasses.fields(ServeParams):
        kind = hints[f.name]
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind if kind in (int, float) else str,
            choices=f.metadata.get("choices"),
            help=f"overrides serve.{f.name}",
        )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    overrides = {key: value for key, value in vars(args).items() if key != "params" and value is not None}
    abstention, named_by = abstention_setting(overrides.pop("abstention", None), params.serve.abstention)
    settings = dataclasses.replace(params.serve, **overrides, abstention=abstention)
    # Command-line values get the same checks as params.yaml, and an error names the flag's source.
    return build_section(ServeParams, dataclasses.asdict(settings), "serve", "the command line"), params, named_by


def check_context(settings: ServeParams, answerer: Answerer) -> None:
    """The longest prompt allowed and the answer after it must fit the model's context."""
    context = answerer.context_tokens
    if context is not None and settings.max_prompt_tokens + settings.max_new_tokens > context:
        raise ParamsError(
            f"serve.max_prompt_tokens ({settings.max_prompt_tokens}) + serve.max_new_tokens "
            f"({settings.max_new_tokens}) is more than the {context} tokens {settings.model} can hold; "
            f"lower max_prompt_tokens to at most {context - settings.max_new_tokens}"
        )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    settings, params, named_by = settings_from(argv)
    abstention = read_abstention(settings.abstention, named_by)
    # A model that cannot load is a clear error before the port opens.
    answerer = Answerer(settings.model, params.model, settings.decoding, settings.max_new_tokens, None, abstention)
    check_context(settings, answerer)
    keys = load_api_keys(settings.api_keys_file)
    warn_if_open(settings.host, keys)
    app = service_app(settings, answerer, keys)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        http=header_timeout_protocol(settings.header_timeout_s),
    )


if __name__ == "__main__":
    run_stage(main)
