"""`medjson serve`: an HTTP API that answers questions with schema-valid JSON.

    medjson serve --model models/grpo_merged          # or: python -m medjson.serve
    curl -s localhost:8000/v1/answer -H 'content-type: application/json' \
        -d '{"question": "Which nerve supplies the deltoid?", "options": ["Radial", "Axillary", "Ulnar", "Median"]}'

Endpoints: ``POST /v1/answer`` (one question), ``POST /v1/answer/batch`` (up to
``serve.max_batch_items``), ``GET /health``, ``GET /v1/schema`` (the answer's JSON schema),
and the OpenAPI docs at ``/docs`` (served locally: no CDN needed) and ``/openapi.json``.

Concurrent requests share the model through dynamic batching: the first waiting question
opens a batch, which takes whatever else arrives within ``serve.max_wait_ms``, up to
``serve.max_batch_size`` questions, and runs as one batched generation while the next batch
gathers. Requests are validated before they queue, so a bad one gets a 422 naming its field
and never reaches, or fails, a batch; every request ends within ``serve.request_timeout_s``
(a 504 otherwise). Settings come from the ``serve`` section of ``params.yaml``, and the
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from medjson.cli import run_stage
from medjson.core.parsing import ANSWER_SCHEMA
from medjson.core.prompts import LETTERS
from medjson.core.questions import Question
from medjson.model.answering import Answerer, none_or, read_abstention
from medjson.params import ServeParams, build_section, load_params

log = logging.getLogger("medjson.serve")


class Batcher:
    """Collects questions into batches (up to B, or what arrives within T ms) for one model."""

    def __init__(self, answerer: Answerer, max_batch_size: int, max_wait_ms: float):
        self.answerer = answerer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        # One thread: generation holds the model; the event loop stays free to accept requests.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.batches = 0

    async def submit(self, question: Question) -> dict:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((question, future))
        return await future

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [(question, future) for question, future in batch if not future.done()]  # timed-out callers left

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self.batches += 1
            try:
                records = await loop.run_in_executor(self.executor, self.answerer.answer, [q for q, _ in batch])
            except Exception as err:  # a failed generation fails its own batch only, with a 500 each
                log.exception("generation failed for a batch of %d", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), record in zip(batch, records):
                if not future.done():
                    future.set_result(record)


def create_app(settings: ServeParams, answerer: Answerer):
    """The FastAPI application around a loaded ``Answerer``; its batcher starts with the server."""
    from fastapi import HTTPException
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel, Field, StringConstraints

    Option = Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=settings.max_option_chars)
    ]

    class QuestionIn(BaseModel):
        id: str | int | None = Field(default=None, description="echoed back in the answer")
        question: Annotated[
            str, StringConstraints(strip_whitespace=True, min_length=1, max_length=settings.max_question_chars)
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
        state["batcher"] = Batcher(answerer, settings.max_batch_size, settings.max_wait_ms)
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

    async def answer_all(questions: list[QuestionIn]) -> list[dict]:
        started = time.perf_counter()
        pending = [
            state["batcher"].submit(Question(None if q.id is None else str(q.id), q.question, list(q.options)))
            for q in questions
        ]
        try:
            records = await asyncio.wait_for(asyncio.gather(*pending), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no answer within serve.request_timeout_s = {settings.request_timeout_s} s")
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return [{**r, "meta": {**r["meta"], "latency_ms": latency_ms}} for r in records]

    @app.post("/v1/answer", response_model=AnswerOut)
    async def answer(question: QuestionIn) -> dict:
        """Answer one question; the answer always has the schema's three fields when `valid` is true."""
        (record,) = await answer_all([question])
        return record

    @app.post("/v1/answer/batch", response_model=BatchOut)
    async def answer_batch(batch: BatchIn) -> dict:
        """Answer several questions; they join the same dynamic batches as single requests."""
        return {"answers": await answer_all(batch.questions)}

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

    return app


def _threshold(answerer: Answerer) -> float | None:
    """The abstention threshold the service marks answers by; None without a file (or when none was reached)."""
    if answerer.abstention is None or answerer.abstention.threshold is None:
        return None
    return round(answerer.abstention.threshold, 4)


def settings_from(argv: list[str] | None = None) -> tuple[ServeParams, Any]:
    """The serve section of the params file, with every key overridable by a flag of the same name."""
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
    if "abstention" in overrides:
        overrides["abstention"] = none_or(overrides["abstention"])
    settings = dataclasses.replace(params.serve, **overrides)
    return check_settings(settings, args.params), params


def check_settings(settings: ServeParams, source) -> ServeParams:
    """Command-line values get the same ranges as params.yaml."""
    return build_section(ServeParams, dataclasses.asdict(settings), "serve", source)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    settings, params = settings_from(argv)

    abstention = read_abstention(settings.abstention)
    # A model that cannot load is a clear error before the port opens.
    answerer = Answerer(settings.model, params.model, settings.decoding, settings.max_new_tokens, None, abstention)
    app = create_app(settings, answerer=answerer)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    run_stage(main)
