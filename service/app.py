"""FastAPI factory. The server answers /healthz at once; models load and warm up in the background,
and /readyz (and every model route) says 503 until they have."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from indexer.store import open_store
from models import open_encoder, open_reranker
from service import errors
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.routes import router
from service.settings import Settings

log = logging.getLogger("reprank")


def load_pipeline(settings: Settings, store, metrics: Metrics) -> Pipeline:
    """Load the encoder (and reranker), run one warm-up pass through each, wire the metrics."""
    common = dict(base=settings.base, device=settings.torch_device(), dtype=settings.torch_dtype(),
                  max_batch_tokens=settings.batch_tokens(), max_batch_size=settings.max_batch_size,
                  max_queue_tokens=settings.max_queue_tokens)
    encoder = open_encoder(settings.model, settings.model_preset,
                           on_batch=metrics.on_batch(settings.model), **common)
    reranker = None
    if settings.reranker != "none":
        reranker = open_reranker(settings.reranker, settings.reranker_preset,
                                 on_batch=metrics.on_batch(settings.reranker), **common)
    if settings.warmup:
        encoder.encode(["warm-up query"], "query")
        if reranker:
            reranker.score("warm-up query", ["warm-up document"])
    metrics.watch_queue(settings.model, encoder.batcher)
    if reranker:
        metrics.watch_queue(settings.reranker, reranker.batcher)
    return Pipeline(settings, encoder, reranker, store, metrics)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.ready, state.pipeline, state.load_error = False, None, None
        store = open_store(settings.data_dir, settings.qdrant_url, settings.qdrant_api_key)

        async def load() -> None:
            start = time.perf_counter()
            try:
                state.pipeline = await asyncio.to_thread(load_pipeline, settings, store, metrics)
            except Exception as exc:  # stay up and say why on /readyz
                log.error("model loading failed: %s", exc)
                state.load_error = str(exc)
                return
            state.ready = True
            metrics.ready.set(1)
            log.info("ready in %.1f s", time.perf_counter() - start)

        loading = asyncio.create_task(load())
        yield
        state.ready = False
        await asyncio.gather(loading, return_exceptions=True)
        if state.pipeline:
            state.pipeline.encoder.close()
            if state.pipeline.reranker:
                state.pipeline.reranker.close()
        store.close()

    app = FastAPI(title="reprank", version="0.1.0", lifespan=lifespan,
                  description="LLM retrieval and reranking: OpenAI embeddings, Cohere rerank, search")
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(router)

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
