"""Prometheus metrics of the service (``GET /metrics``, Prometheus' text format).

Each app has its own registry, so two services in one process (tests) never share counts.
``RequestMetrics`` is ASGI middleware outside every other layer: it counts each request by
route and status, whatever answered it (a 401, a 413, the application), times it, and writes the
access log line (uvicorn's own is off: it never logs a request whose client left, and it would
log query strings, where a careless client puts its API key). A request whose client hung up is
status 499 in both.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from medjson.core.choices import ACCESS_LOGS
from medjson.model.answer_record import AnswerRecord
from medjson.serving.client_text import log_safe
from medjson.serving.errors import CLIENT_GONE, CLIENT_GONE_KEY

access_log = logging.getLogger("medjson.access")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The service's counters, histograms and gauges, in one registry."""

    def __init__(self, known_routes: set[str] | None = None):
        self.registry = CollectorRegistry()
        # The application's routes; any other path counts as "other", so a scanner cannot grow the series.
        self.known_routes = known_routes or set()
        self.requests = Counter(
            "medjson_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "medjson_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "medjson_batch_size", "Questions per batched generation", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("medjson_queue_depth", "Questions waiting for a batch", registry=self.registry)
        self.tokens = Counter("medjson_generated_tokens", "Tokens generated", registry=self.registry)
        self.answers = Counter("medjson_answers", "Questions answered", registry=self.registry)
        self.abstained = Counter(
            "medjson_abstained_answers", "Answers below the abstention threshold", registry=self.registry
        )
        self.abstention_rate = Gauge(
            "medjson_abstention_rate", "Share of answers abstained on since the start", registry=self.registry
        )
        self._totals = (0, 0)  # answers and abstentions since the start, for the rate

    def route(self, path: str) -> str:
        """The route's template (``/v1/models/{model_id:path}``), or ``other``."""
        if path in self.known_routes:
            return path
        for template in self.known_routes:
            head, brace, _ = template.partition("{")
            if brace and path.startswith(head) and len(path) > len(head):
                return template
        return "other"

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def generated(self, records: list[AnswerRecord]) -> None:
        """Count the tokens a batch generated, for answers delivered or not (a row whose caller left)."""
        self.tokens.inc(sum(r.meta.new_tokens for r in records))

    def answered(self, records: list[AnswerRecord]) -> None:
        """Count delivered answers and abstentions (None: no abstention file, never counted)."""
        abstained = sum(1 for r in records if r.meta.abstained)
        self.answers.inc(len(records))
        self.abstained.inc(abstained)
        self._totals = (self._totals[0] + len(records), self._totals[1] + abstained)
        self.abstention_rate.set(self._totals[1] / self._totals[0] if self._totals[0] else 0.0)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def logged_path(scope, secrets: tuple[str, ...] = ()) -> str:
    """The path as the access log shows it: escaped (``log_safe``: no client can write a line of its
    own), any configured API key in it redacted, and of a query string only how many parameters it
    had: a careless client puts its key in a value or a name (``?sk-...``, ``?api_key%3Dsk-...``)."""
    path = scope["path"]
    for secret in secrets:
        path = path.replace(secret, "<redacted>")
    query = scope.get("query_string", b"")
    shown = log_safe(path)
    if not query:
        return shown
    count = len(query.split(b"&"))
    return f"{shown}?<query not logged: {count} parameter{'' if count == 1 else 's'}>"


def access_record(scope, status: int, seconds: float, secrets: tuple[str, ...] = ()) -> dict:
    """One request as the access log records it; every value that came from the client escaped."""
    client = scope.get("client") or ("-", 0)
    return {
        "client": f"{client[0]}:{client[1]}",
        "method": log_safe(scope["method"]),
        "path": logged_path(scope, secrets),
        "http_version": log_safe(scope.get("http_version", "1.1")),
        "status": status,
        "seconds": round(seconds, 3),
    }


def text_line(record: dict) -> str:
    """uvicorn's access line: ``client "METHOD path HTTP/v" status seconds``."""
    return (
        f'{record["client"]} "{record["method"]} {record["path"]} HTTP/{record["http_version"]}" '
        f"{record['status']} {record['seconds']:.3f}s"
    )


def json_line(record: dict) -> str:
    """The same record as one JSON object, for log collectors (``serve.access_log: json``)."""
    return json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record})


ACCESS_LOG_FORMATS = dict(zip(ACCESS_LOGS, (text_line, json_line)))


def bare_access_lines() -> None:
    """The access log's lines as they are, on stderr, with no time or level before them: for JSON
    lines, which a log collector reads whole (they carry their own time)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [handler]
    access_log.propagate = False


class RequestMetrics:
    """ASGI middleware: every HTTP request counted by route and status, timed, and logged (``line_format``:
    ``text`` or ``json``; ``secrets``: the API keys, never written)."""

    def __init__(self, app, metrics: ServiceMetrics, line_format: str = "text", secrets: tuple[str, ...] = ()):
        self.app, self.metrics = app, metrics
        self.line, self.secrets = ACCESS_LOG_FORMATS[line_format], tuple(secrets)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, started, status = self.metrics.route(scope["path"]), time.perf_counter(), [500]

        async def record_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            return await self.app(scope, receive, record_status)
        finally:
            final = CLIENT_GONE if scope.get(CLIENT_GONE_KEY) else status[0]
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, str(final)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            access_log.info("%s", self.line(access_record(scope, final, seconds, self.secrets)))
