"""The service's ASGI application: three APIs on one ``Service``, behind the layers that hold it up.

From the outside in: ``RequestMetrics`` (counts, times and logs every request, whatever answered
it), ``ErrorBoundary`` (anything unexpected: logged once, a JSON 500), ``BrowserGuard`` on a keyless
server (what a page on another site could send: a 403 or 415), ``ApiKeys`` (a 401 before any body
is read), ``BodyLimits`` (whole, bounded, not too deeply nested bodies), then FastAPI
with the routers of the own API, OpenAI's and operations, and the exception handlers that put
every error in its API's shape (``medjson.serving.errors``).
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from medjson.model.answering import Answerer
from medjson.params import ServeParams
from medjson.serving import answer_routes, openai_routes, ops_routes
from medjson.serving.auth import ApiKeys, BrowserGuard
from medjson.serving.errors import CLIENT_GONE, ErrorBoundary, install_handlers
from medjson.serving.http import BodyLimits
from medjson.serving.metrics import RequestMetrics, ServiceMetrics
from medjson.serving.openai_requests import request_validator
from medjson.serving.service import ClientGone, Service

log = logging.getLogger("medjson.serve")


def create_app(service: Service):
    """The FastAPI application around a ``Service``; its batcher starts with the server."""
    from fastapi.responses import Response
    from fastapi_offline import FastAPIOffline

    @asynccontextmanager
    async def lifespan(app):
        request_validator()
        # The model and libraries are millions of objects that live as long as the service: kept out of the
        # garbage collector's full passes, which would otherwise hold every request for a fifth of a second.
        gc.collect()
        gc.freeze()
        task = service.start()
        settings = service.settings
        log.info(
            "serving %s (%s decoding) on http://%s:%d", settings.model, settings.decoding, settings.host, settings.port
        )
        yield
        task.cancel()
        service.batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(
        title="medjson",
        summary="Medical multiple-choice questions answered as strict JSON",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    routers = [module.router for module in (answer_routes, openai_routes, ops_routes)]
    for router in routers:
        app.include_router(router)
    # Every path the service answers (its own and the docs'), for the metrics' route label.
    service.metrics.known_routes = {
        r.path for router in [app.router, *routers] for r in router.routes if hasattr(r, "path")
    }
    install_handlers(app)

    @app.exception_handler(ClientGone)
    async def client_gone(request, error):  # nobody reads it: the status is for the count and the log
        return Response(status_code=CLIENT_GONE)

    return app


def service_app(settings: ServeParams, answerer: Answerer, keys: list[str]):
    """The whole ASGI stack for a loaded ``Answerer``."""
    metrics = ServiceMetrics()
    application = create_app(Service(settings, answerer, metrics))
    app = ApiKeys(BodyLimits(application, settings.max_body_bytes, settings.body_timeout_s), keys)
    if not keys:  # what a browser on another site could send: refused before any body is read
        app = BrowserGuard(app, settings.host, settings.allowed_hosts, settings.allowed_origins)
    return RequestMetrics(ErrorBoundary(app), metrics, settings.access_log, secrets=tuple(keys))
