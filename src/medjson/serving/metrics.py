"""Prometheus metrics of the service (``GET /metrics``, Prometheus' text format).

Each app has its own registry, so two services in one process (tests) never share counts.
``RequestMetrics`` is ASGI middleware outside every other layer: it counts each request by
route and status, whatever answered it (a 401, a 413, the application), and times it.
"""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        return path if path in self.known_routes else "other"

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def answered(self, records: list[dict]) -> None:
        """Count answers, their tokens and abstentions (None: no abstention file, never counted)."""
        abstained = sum(1 for r in records if r["meta"]["abstained"])
        self.answers.inc(len(records))
        self.tokens.inc(sum(r["meta"]["new_tokens"] for r in records))
        self.abstained.inc(abstained)
        self._totals = (self._totals[0] + len(records), self._totals[1] + abstained)
        self.abstention_rate.set(self._totals[1] / self._totals[0] if self._totals[0] else 0.0)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetrics:
    """ASGI middleware: every HTTP request counted by route and status, and timed."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

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
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
