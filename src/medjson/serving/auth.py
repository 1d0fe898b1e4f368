"""API keys: every route but ``/health`` needs ``Authorization: Bearer <key>`` once keys are configured.

Keys come from the environment variable ``MEDJSON_API_KEYS`` (comma-separated) and from the
file ``serve.api_keys_file`` names (one key per line; blank lines and ``#`` comments skipped).
A presented key is compared with every configured one in constant time, so the reply's timing
says nothing about how much of a key was right. A refusal is a 401 in the route's error shape
(OpenAI's on its routes, which OpenAI clients raise as their authentication error). A request
with more than one ``Authorization`` header is refused too, whatever they hold: a proxy that
reads the first and a service that reads the last would each see another key.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from medjson.errors import ParamsError
from medjson.serving.client_text import log_safe
from medjson.serving.errors import send_error

KEYS_VARIABLE = "MEDJSON_API_KEYS"
OPEN_ROUTES = ("/health",)  # a load balancer's probe carries no key


def load_api_keys(keys_file: str | None, environ: dict | None = None) -> list[str]:
    """The configured keys: the environment variable's and the file's; none configured: an empty list."""
    environ = os.environ if environ is None else environ
    keys = [k.strip() for k in environ.get(KEYS_VARIABLE, "").split(",") if k.strip()]
    if keys_file is not None:
        path = Path(keys_file)
        if not path.is_file():
            raise ParamsError(f"serve.api_keys_file names {path}, which does not exist")
        from_file = [
            line.strip()
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        if not from_file:
            raise ParamsError(f"serve.api_keys_file {path} holds no key (one per line)")
        keys += from_file
    return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiKeys:
    """ASGI middleware: a request without a configured key gets a 401 before anything reads its body."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = [k.encode() for k in keys]

    def _accepted(self, header: bytes | None) -> bool:
        scheme, _, presented = (header or b"").partition(b" ")
        if scheme.lower() != b"bearer":
            presented = b""
        matches = [hmac.compare_digest(presented.strip(), key) for key in self.keys]  # every key, always
        return any(matches)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_ROUTES:
            return await self.app(scope, receive, send)
        presented = [value for name, value in scope.get("headers", []) if name == b"authorization"]
        if len(presented) == 1 and self._accepted(presented[0]):
            return await self.app(scope, receive, send)
        message = (
            "send one Authorization header, not several"
            if len(presented) > 1
            else "a valid API key is required: send `Authorization: Bearer <key>`"
        )
        await send_error(scope, send, 401, message, code="invalid_api_key", headers=[(b"www-authenticate", b"Bearer")])


JSON_MEDIA = ("application/json",)
WITH_BODY = (b"POST", b"PUT", b"PATCH")
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def _host_name(value: str) -> str:
    """The host of a Host header or an origin's authority, without its port (``[::1]:8000`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BrowserGuard:
    """ASGI middleware of a keyless server: it refuses what a web page on another site can make a
    browser send, as Jupyter and Ollama do for their local servers. A Host header that names no name of
    this server (a DNS-rebinding page reaches 127.0.0.1 under its own name), an Origin of another site,
    and a body whose Content-Type is not JSON (a form or ``text/plain`` needs no CORS preflight, so the
    browser sends it at once) get a 403 or 415 before anything reads the body. ``serve.allowed_hosts``
    and ``serve.allowed_origins`` add names ("*": any). A server with API keys needs none of it: a page
    cannot add a key it does not have."""

    def __init__(self, app, bound_host: str, allowed_hosts: list[str], allowed_origins: list[str]):
        self.app = app
        self.hosts = {*LOCAL_NAMES, _host_name(bound_host), *(_host_name(h) for h in allowed_hosts)}
        self.origins = {origin.strip().lower().rstrip("/") for origin in allowed_origins}

    def refusal(self, scope) -> tuple[int, str] | None:
        headers = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name, value.decode("latin-1"))
        host = _host_name(headers.get(b"host", ""))
        if "*" not in self.hosts and host not in self.hosts:
            return 403, (
                f"this server answers requests addressed to {sorted(self.hosts)}, not to the Host "
                f"{log_safe(host)!r}; add it to serve.allowed_hosts (or give the server API keys)"
            )
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin):
            return 403, (
                f"this server answers pages of this machine, not the Origin {log_safe(origin)!r}; add it to "
                "serve.allowed_origins (or give the server API keys)"
            )
        media = headers.get(b"content-type", "").split(";")[0].strip().lower()
        if scope["method"].encode() in WITH_BODY and not (media in JSON_MEDIA or media.endswith("+json")):
            return 415, f"the body must be sent as Content-Type: application/json, not {log_safe(media or 'none')!r}"
        return None

    def _origin_allowed(self, origin: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if "*" in self.origins or origin in self.origins:
            return True
        scheme, _, authority = origin.partition("://")
        return scheme in ("http", "https") and _host_name(authority) in LOCAL_NAMES

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_ROUTES:
            return await self.app(scope, receive, send)
        refused = self.refusal(scope)
        if refused is None:
            return await self.app(scope, receive, send)
        await send_error(scope, send, refused[0], refused[1], headers=[(b"connection", b"close")])
