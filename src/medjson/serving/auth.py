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
