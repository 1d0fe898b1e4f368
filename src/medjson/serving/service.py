"""The service's state and its one way of answering: tickets in, records out, or the work stopped.

Every route answers through ``Service.answer`` (whole answers) or ``Service.stream`` (tokens as
they come). Both share one cancellation path: a request that runs past ``serve.request_timeout_s``
and a request whose client hangs up cancel their tickets the same way, and a cancelled ticket's
row leaves its batch at the next decoding step. A request its client left is counted and logged
with status 499 (``errors.CLIENT_GONE``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi.exceptions import RequestValidationError

from medjson.core.questions import Question
from medjson.model.answer_record import AnswerRecord
from medjson.model.answering import Answerer
from medjson.params import ServeParams
from medjson.serving.batching import FINISHED, Batcher, Ticket
from medjson.serving.errors import CLIENT_GONE_KEY, ApiError
from medjson.serving.metrics import ServiceMetrics
from medjson.serving.protocol import QuestionIn

log = logging.getLogger("medjson.serve")

TIMEOUT, DISCONNECTED = "timeout", "disconnected"


class ClientGone(Exception):
    """The client hung up before its answer was ready: there is nobody to answer."""


@dataclass
class Service:
    settings: ServeParams
    answerer: Answerer
    metrics: ServiceMetrics
    batcher: Batcher | None = None  # started with the server (lifespan)
    started: int = field(default_factory=lambda: int(time.time()))

    def start(self) -> asyncio.Task:
        self.batcher = Batcher(
            self.answerer,
            self.settings.max_batch_size,
            self.settings.max_wait_ms,
            on_batch=self.metrics.batch_size.observe,
            on_generated=self.metrics.generated,
        )
        self.metrics.watch_queue(self.batcher.queue.qsize)
        return asyncio.create_task(self.batcher.run())

    def token_refusal(self, tokens: int) -> str | None:
        """Why a prompt of this many tokens is refused; None when it fits serve.max_prompt_tokens."""
        limit = self.settings.max_prompt_tokens
        return (
            None if tokens <= limit else f"the prompt is {tokens} tokens, more than serve.max_prompt_tokens = {limit}"
        )

    def prompt_refusal(self, question: Question) -> str | None:
        return self.token_refusal(self.answerer.prompt_tokens(question))

    def within_limits(self, questions: list[QuestionIn], where: tuple = ()) -> list[Question]:
        """The questions to answer, or a 422 for every field over a ``serve`` limit (characters, then the
        prompt in tokens, ``serve.max_prompt_tokens``)."""
        settings, errors = self.settings, []
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
                refusal = self.prompt_refusal(question)
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

    def timeout_error(self) -> ApiError:
        limit = self.settings.request_timeout_s
        return ApiError(504, f"no answer within serve.request_timeout_s = {limit} s", code="timeout")

    def submit(self, questions: list[Question], max_tokens: int | None = None) -> list[Ticket]:
        tickets = [Ticket(question, max_tokens) for question in questions]
        for ticket in tickets:
            self.batcher.submit(ticket)
        return tickets

    async def answer(self, request, questions: list[Question], max_tokens: int | None = None):
        """The records of ``questions`` and their tickets, within the timeout (else a 504), unless the
        client leaves first (``ClientGone``); either way the tickets are cancelled."""
        started = time.perf_counter()
        tickets = self.submit(questions, max_tokens)
        answers = asyncio.ensure_future(_all_answers(tickets))
        left = asyncio.ensure_future(_disconnect(request))
        try:
            done, _ = await asyncio.wait(
                {answers, left}, timeout=self.settings.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            left.cancel()
        if answers not in done:
            reason = DISCONNECTED if left in done else TIMEOUT
            _cancel(tickets, reason)
            answers.cancel()
            if reason == DISCONNECTED:
                mark_client_gone(request)
                raise ClientGone()
            raise self.timeout_error()
        records = _results(answers)
        self.metrics.answered(records)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return [r.with_latency(latency_ms) for r in records], tickets

    async def stream(self, ticket: Ticket) -> AsyncIterator[int | None]:
        """Each token count as the ticket's row grows, then FINISHED; a ``TimeoutError`` past the limit.
        A client that hangs up cancels the iteration (Starlette cancels its stream): the ticket with it."""
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    step = await asyncio.wait_for(ticket.progress.get(), max(remaining, 0))
                except asyncio.TimeoutError:
                    ticket.cancel(TIMEOUT)
                    raise self.timeout_error() from None
                yield step
                if step is FINISHED:
                    return
        except (asyncio.CancelledError, GeneratorExit):
            ticket.cancel(DISCONNECTED)
            raise


def mark_client_gone(request) -> None:
    """Mark the request as left by its client, for the metrics and the access log."""
    request.scope[CLIENT_GONE_KEY] = True


def _cancel(tickets: list[Ticket], reason: str) -> None:
    for ticket in tickets:
        ticket.cancel(reason)


async def _all_answers(tickets: list[Ticket]) -> list[AnswerRecord]:
    """Every ticket's record, in order. A cancelled ticket cancels this task, which asyncio then takes as
    settled; ``asyncio.gather`` would be left holding a CancelledError that nobody retrieves, and log it."""
    return [await ticket.answer for ticket in tickets]


def _results(answers: asyncio.Future) -> list[AnswerRecord]:
    try:
        return answers.result()
    except Exception:  # the batcher logged the generation's failure with its traceback
        raise ApiError(500, "generation failed for this request's batch; the error is in the service's log") from None


async def _disconnect(request) -> None:
    """Returns when the client has hung up (the body was read whole before: what comes next is the end)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _too_long(loc: tuple, limit: int, value, what: str = "characters") -> dict:
    return {
        "type": "too_long",
        "loc": loc,
        "msg": f"should have at most {limit} {what}",
        "input": value,
    }
