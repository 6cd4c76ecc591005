"""FastAPI factory. The server answers /healthz at once; models load and warm up in the background,
and /readyz (and every model route) says 503 until they have."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from service import docs, errors
from service.lifecycle import RequestLifecycle
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.routes import router
from service.security import LimitBody, RequireApiKey, disable_telemetry, key_digests
from service.served import open_models
from service.settings import Settings
from store import open_store

log = logging.getLogger("reprank")


async def load_pipeline(settings: Settings, store, metrics: Metrics) -> Pipeline:
    """Load and warm up the models of this role (or reach the gateway's workers), wire the metrics."""
    encoder, reranker = await open_models(settings, metrics)
    return Pipeline(settings, encoder, reranker, store, metrics)


def create_app(settings: Settings | None = None) -> FastAPI:
    disable_telemetry()
    settings = settings or Settings()
    metrics = Metrics()
    keys = key_digests(settings.api_keys and settings.api_keys.get_secret_value(), settings.api_keys_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.ready, state.pipeline, state.load_error, state.draining = False, None, None, False
        metrics_server = metrics.serve(settings.host, settings.metrics_port) if settings.metrics_port else None
        store = None if settings.role == "worker" else open_store(settings.store_config())

        async def load() -> None:
            start = time.perf_counter()
            try:
                state.pipeline = await load_pipeline(settings, store, metrics)
            except Exception as exc:  # stay up and say why on /readyz
                log.error("model loading failed: %s", exc)
                state.load_error = str(exc)
                return
            state.ready = True
            metrics.ready.set(1)
            rerank = (f"; a search reranks its top {state.pipeline.candidates} unless it names `candidates`"
                      if state.pipeline.reranker else "")
            log.info("ready in %.1f s%s", time.perf_counter() - start, rerank)

        loading = asyncio.create_task(load())
        yield
        state.ready = False
        if settings.role == "gateway":
            loading.cancel()  # it may be waiting for workers that never come
        await asyncio.gather(loading, return_exceptions=True)
        if state.pipeline:
            await state.pipeline.aclose()
        if store is not None:
            store.close()
        if metrics_server:
            metrics_server.shutdown()

    app = FastAPI(title="reprank", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="LLM retrieval and reranking: OpenAI embeddings, Cohere rerank and embed, TEI, search")
    docs.install(app)  # from local files: no CDN
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(router)
    app.add_middleware(RequestLifecycle, request_timeout=settings.request_timeout)
    app.add_middleware(LimitBody, max_bytes=settings.max_body_bytes)
    if keys:
        app.add_middleware(RequireApiKey, digests=keys)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            metrics.observe_request(getattr(route, "path", "other"), status, time.perf_counter() - start)

    return app
