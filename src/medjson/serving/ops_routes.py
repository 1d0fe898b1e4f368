"""Operations: ``GET /health`` (open without a key: a load balancer's probe), ``GET /metrics``
(Prometheus) and ``GET /v1/schema`` (the JSON schema every valid answer follows)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from medjson.core.parsing import ANSWER_SCHEMA

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    service = request.app.state.service
    settings, batcher, abstention = service.settings, service.batcher, service.answerer.abstention
    return {
        "status": "ok" if batcher else "loading",
        "model": settings.model,
        "decoding": settings.decoding,
        "confidence": service.answerer.confidence,
        "max_batch_size": settings.max_batch_size,
        "abstention": str(abstention.path) if abstention is not None and abstention.path else None,
        "abstention_threshold": (
            round(abstention.threshold, 4) if abstention is not None and abstention.threshold is not None else None
        ),
        "queued": batcher.queue.qsize() if batcher else 0,
        "batches_run": batcher.batches if batcher else 0,
    }


@router.get("/v1/schema")
async def schema() -> dict:
    """The JSON schema every valid answer follows."""
    return ANSWER_SCHEMA


@router.get("/metrics")
async def prometheus_metrics(request: Request):
    """Requests by route and status (499: the client left), latency and batch-size histograms, queue
    depth, tokens generated, answers and abstentions."""
    content, media_type = request.app.state.service.metrics.exposition()
    return Response(content, media_type=media_type)
