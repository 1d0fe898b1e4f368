"""Every error the service sends, in the shape of the API it was sent to: the one place that decides it.

- OpenAI's API (``/v1/chat/completions``, ``/v1/models`` and any ``/v1/`` path the service does
  not have): OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``, which its
  clients read into their exceptions.
- The service's own routes (``/v1/answer``, ``/health``, ...): ``{"detail": ...}``, FastAPI's shape
  (a 422's detail is the list of fields at fault).

The middleware in front of the application (keys, body limits) and its exception handlers all
answer through ``error_response`` / ``send_error``, so a 401, a 413 and a 500 look alike on a route.
An unexpected exception is a JSON 500 that names no internals; it is logged once, with its traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from medjson.serving.client_text import excerpt, log_safe, validation_detail

log = logging.getLogger("medjson.serve")

OWN_PREFIXES = ("/v1/answer", "/v1/schema")  # the service's own routes under /v1/
OPENAI_PREFIX = "/v1/"
CLIENT_GONE = 499  # nginx's "client closed request": the status a request its client left is counted as
CLIENT_GONE_KEY = "medjson.client_gone"  # set in a request's scope when its client hung up


class ApiError(Exception):
    """A request the service refuses: status, message, the parameter at fault, a machine-readable code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX) and not path.startswith(OWN_PREFIXES)


def openai_error_type(status: int) -> str:
    """OpenAI's ``type`` for a status, as its own servers send it (a bad key too is an invalid request)."""
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    path: str, status: int, message: str, param: str | None = None, code: str | None = None, detail: Any = None
) -> dict:
    """The error's body for the API ``path`` belongs to; ``detail`` replaces the message on own routes
    (a 422's list of fields)."""
    if is_openai_path(path):
        return {"error": {"message": message, "type": openai_error_type(status), "param": param, "code": code}}
    return {"detail": message if detail is None else detail}


def error_response(path: str, status: int, message: str, param=None, code=None, detail=None, headers=None):
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(path, status, message, param, code, detail), status_code=status, headers=headers)


async def send_error(scope, send, status: int, message: str, code: str | None = None, headers=()) -> None:
    """An error sent by ASGI middleware, before the application: same shapes, and the connection closed
    where the body was not read."""
    body = json.dumps(error_body(scope["path"], status, message, code=code)).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


STATUS_MESSAGES = {
    404: "no such route: {method} {path}",
    405: "{method} is not allowed on {path}",
}


def install_handlers(app) -> None:
    """Exception handlers: refusals, routing errors (404, 405) and anything unexpected, each in its API's shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def refused(request, error: ApiError):
        return error_response(request.url.path, error.status, error.message, error.param, error.code)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        path = request.url.path
        template = STATUS_MESSAGES.get(error.status_code)
        message = template.format(method=request.method, path=_short(path)) if template else str(error.detail)
        code = "not_found" if error.status_code == 404 else None
        return error_response(path, error.status_code, message, code=code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        detail = validation_detail(error.errors())
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        field = ".".join(str(part) for part in first["loc"] if part != "body") or None
        message = f"{field}: {first['msg']}" if field else first["msg"]
        return error_response(request.url.path, 422, message, param=field, detail=detail)

    @app.exception_handler(Exception)
    async def unexpected(request, error: Exception):
        # Logged once by ErrorBoundary, which sees the exception Starlette re-raises after this reply.
        return error_response(request.url.path, 500, "the service failed on this request; the error is in its log")


def _short(path: str) -> str:

    return excerpt(path)


class ErrorBoundary:
    """ASGI middleware outside the application: an exception that escapes it is logged once with its
    traceback and, where no reply has started, answered with a JSON 500 in the route's shape; it never
    reaches the server, which would log it again and answer in plain text."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception("unexpected error on %s %s", log_safe(scope.get("method", "")), log_safe(scope["path"]))
            if not started:
                await send_error(scope, send, 500, "the service failed on this request; the error is in its log")
