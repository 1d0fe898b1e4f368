"""Dynamic batching: concurrent requests share one model through batched generation.

The first waiting question opens a batch, which takes whatever else arrives within the wait, up
to the batch size, and runs as one batched generation in a worker thread while the event loop
keeps accepting requests and the next batch gathers.

Each question travels as a ``Ticket``: its answer (a future), the tokens it has been given so far
(sent from the generating thread, and handed to a streaming response as they come), the caller's
own token limit, and whether its caller still wants it. A ticket cancelled for any reason (the
request's timeout, its client hanging up) leaves its batch at the next decoding step.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from medjson.core.questions import Question
from medjson.model.answer_record import AnswerRecord
from medjson.model.answering import Answerer

log = logging.getLogger("medjson.serve")

FINISHED = None  # what a ticket's token queue holds last


class Ticket:
    """One question's place in the queue and in its batch."""

    def __init__(self, question: Question, max_tokens: int | None = None):
        self.loop = asyncio.get_running_loop()
        self.question = question
        self.max_tokens = max_tokens  # the caller's own limit, below the service's; None: the service's
        self.answer: asyncio.Future = self.loop.create_future()
        self.cancelled_because: str | None = None
        # Every token with its step's letter logits, in order: what the content is built from.
        self.tokens: list[int] = []
        self.letter_logits: list[list[float] | None] = []
        self.progress: asyncio.Queue = asyncio.Queue()  # a token count per step, then FINISHED

    def cancel(self, reason: str) -> None:
        """The caller gave up (``timeout``, ``disconnected``): the row stops at the next step."""
        if not self.answer.done():
            self.cancelled_because = reason
            self.answer.cancel()

    def stop_here(self) -> bool:
        """Asked by the generating thread after each token: no more tokens for this row."""
        return self.answer.done() or (self.max_tokens is not None and len(self.tokens) >= self.max_tokens)

    def add_token(self, token: int, letter_logits: list[float] | None) -> None:
        """A token chosen for this row (in the generating thread); a stream hears of it at once."""
        self.tokens.append(token)
        self.letter_logits.append(letter_logits)
        self.loop.call_soon_threadsafe(self.progress.put_nowait, len(self.tokens))

    def finished(self, record: AnswerRecord | None = None, error: BaseException | None = None) -> None:
        if not self.answer.done():
            if error is not None:
                self.answer.set_exception(error)
            else:
                self.answer.set_result(record)
        self.progress.put_nowait(FINISHED)


class Batcher:
    """Collects tickets into batches (up to B, or what arrives within T ms) for one model."""

    def __init__(
        self,
        answerer: Answerer,
        max_batch_size: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
        on_generated: Callable[[list[dict]], None] | None = None,
    ):
        self.answerer = answerer
        self.on_batch = on_batch  # told each batch's size as it starts (the service's metrics)
        self.on_generated = on_generated  # told every row's record, wanted or not (tokens generated)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        # One thread: generation holds the model; the event loop stays free to accept requests.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.batches = 0

    def submit(self, ticket: Ticket) -> None:
        self.queue.put_nowait(ticket)

    async def _gather(self) -> list[Ticket]:
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
        return [ticket for ticket in batch if not ticket.answer.done()]  # callers that left while it queued

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self.batches += 1
            if self.on_batch:
                self.on_batch(len(batch))
            answer = functools.partial(
                self.answerer.answer,
                stopped=lambda row: batch[row].stop_here(),
                on_token=lambda row, token, letters: batch[row].add_token(token, letters),
            )
            try:
                records = await loop.run_in_executor(self.executor, answer, [t.question for t in batch])
            except Exception as err:  # a failed generation fails its own batch only, with a 500 each
                log.exception("generation failed for a batch of %d", len(batch))
                for ticket in batch:
                    ticket.finished(error=err)
                continue
            if self.on_generated:
                self.on_generated(records)
            for ticket, record in zip(batch, records):
                ticket.finished(record)
