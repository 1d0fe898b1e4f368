"""A client's values as the service writes them back and logs them.

- ``excerpt``: a short, JSON-safe stand-in for any value sent (never the whole input back);
- ``log_safe``: a client's text as one log line may hold it (no forged lines, no terminal escapes);
- ``validation_detail``: a 422's fields at fault, each input an excerpt, so a NaN or a lone surrogate
  in a request is never a 500.
"""

from __future__ import annotations

import math
from typing import Any

EXCERPT_CHARS = 80


def excerpt(value: Any) -> Any:
    """A short, JSON-safe stand-in for a value a client sent."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str):
        safe = value.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate becomes \ud800
        return safe if len(safe) <= EXCERPT_CHARS else f"{safe[:EXCERPT_CHARS]}... ({len(value)} characters)"
    if isinstance(value, (list, dict)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def log_safe(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A client's text as one log line may hold it: every control, non-ASCII and quote character
    escaped (``\\n``, ``\\x1b``, ``\\u2028``, ``\\"``), so that no input can start a line of its own or
    send a terminal escape; cut to ``limit`` characters."""
    safe = text[:limit].encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return safe if len(text) <= limit else f"{safe}... ({len(text)} characters)"


def validation_detail(errors: list[dict]) -> list[dict]:
    """FastAPI's 422 detail (type, loc, msg, input per error), with every input an excerpt."""
    return [
        {
            "type": error.get("type"),
            "loc": [excerpt(part) for part in error.get("loc", ())],
            "msg": excerpt(str(error.get("msg", ""))),
            "input": excerpt(error.get("input")),
        }
        for error in errors
    ]
