"""Dynamic batching: concurrent requests share one model through batched generation.

The first waiting question opens a batch, which takes whatever else arrives within the wait, up
to the batch size, and runs as one batched generation in a worker thread while the event loop
keeps accepting requests and the next batch gathers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from medjson.core.questions import Question
from medjson.model.answering import Answerer

log = logging.getLogger("medjson.serve")


class Batcher:
    """Collects questions into batches (up to B, or what arrives within T ms) for one model."""

    def __init__(
        self,
        answerer: Answerer,
        max_batch_size: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.answerer = answerer
        self.on_batch = on_batch  # told each batch's size as it starts (the service's metrics)
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
            if self.on_batch:
                self.on_batch(len(batch))
            # A question whose caller gave up (its future cancelled by the request's timeout) stops generating.
            answer = functools.partial(self.answerer.answer, stopped=lambda row: batch[row][1].done())
            try:
                records = await loop.run_in_executor(self.executor, answer, [q for q, _ in batch])
            except Exception as err:  # a failed generation fails its own batch only, with a 500 each
                log.exception("generation failed for a batch of %d", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), record in zip(batch, records):
                if not future.done():
                    future.set_result(record)
