"""Holding the HTTP service up under hostile clients.

- ``header_timeout_protocol``: uvicorn's HTTP/1.1 protocol, closing a connection whose request
  headers have not all arrived within the limit (a stalled or trickling client holds no socket).
- ``BodyLimits``: an ASGI wrapper that reads the body first, refusing one over the size limit
  (413, before reading it when Content-Length says so), one that does not arrive in time (408) or
  one nested deeper than ``MAX_JSON_DEPTH`` (400: a parser's recursion is no 500), so the
  application only ever sees whole, bounded bodies.
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.concurrency import run_in_threadpool

from medjson.core.questions import SURROGATE, has_surrogate
from medjson.serving.errors import send_error

# Deeper JSON is refused before any parser sees it (Python's recurses, and fails near 1,000 levels);
# the deepest request a client sends, a json_schema's nested properties, is far shallower.
MAX_JSON_DEPTH = 64
OFF_LOOP_BYTES = 65_536  # a body this large or larger is checked in a worker thread


def json_depth(body: bytes) -> int:
    """How deep a JSON text's arrays and objects nest, brackets inside strings aside (no recursion).

    The check runs on every body before any route, on the event loop, so it is a few passes of C over
    the bytes (about 10 ms for 2 MB), never a Python step per bracket: escaped backslashes, then escaped
    quotes, are dropped, so that every quote left opens or closes a string; a byte after an odd number of
    quotes is inside one; the running count of the other brackets (+1 opening, -1 closing) peaks at the
    depth."""
    text = np.frombuffer(body.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    marks = text[_JSON_MARKS[text]]  # the quotes and brackets, in order
    outside = np.cumsum(marks == ord('"')) % 2 == 0
    steps = np.where(outside, _BRACKET_STEP[marks], 0)
    return int(np.cumsum(steps).max(initial=0))


def _byte_table(values: dict[int, int], dtype) -> np.ndarray:
    table = np.zeros(256, dtype=dtype)
    table[list(values)] = list(values.values())
    return table


_JSON_MARKS = _byte_table({ord(c): True for c in '"[]{}'}, bool)
_BRACKET_STEP = _byte_table({ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}, "int32")


def no_surrogates(text: str) -> str:
    """A pydantic validator: a lone surrogate (JSON's "\\ud800") is no character, and no model input."""
    if has_surrogate(text):
        raise ValueError(SURROGATE)
    return text


async def _refuse(scope, send, status: int, message: str) -> None:
    """A refusal before the body is read whole: the connection closes, so no unread rest is taken for a request."""
    await send_error(scope, send, status, message, headers=[(b"connection", b"close")])


class BodyLimits:
    """ASGI middleware: the whole body, at most ``max_bytes``, within ``timeout_s``, or a 413/408."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _refuse(scope, send, 413, f"the body is {int(declared)} bytes, more than {self.max_bytes}")
        chunks, size, more = [], 0, True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return await _refuse(scope, send, 408, f"the body did not arrive within {self.timeout_s} s")
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _refuse(scope, send, 413, f"the body is more than {self.max_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False
        # A large body's check leaves the event loop (numpy lets go of the GIL), so no body holds up the rest.
        depth = json_depth(body) if len(body) < OFF_LOOP_BYTES else await run_in_threadpool(json_depth, body)
        if depth > MAX_JSON_DEPTH:
            return await send_error(scope, send, 400, f"the body nests deeper than {MAX_JSON_DEPTH} levels")

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        return await self.app(scope, replay, send)


def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing any connection whose request headers take longer than ``timeout_s``
    (from its opening, or from the end of the previous response on a kept-alive connection)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        header_timer = None

        def _arm(self) -> None:
            self._disarm()
            self.header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_too_slow(self) -> None:
            if self.cycle is None or self.cycle.response_complete:  # still waiting for a request's headers
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the headers are in: the body has its own limit (BodyLimits)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol
