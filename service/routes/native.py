"""reprank's own routes: search, the model list, health, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from service.errors import ApiError, error_response
from service.routes.common import MODEL_ERRORS, pipeline
from service.schemas import ModelCard, ModelList, SearchRequest, SearchResponse, error_responses

router = APIRouter(tags=["reprank"])


@router.post("/v1/search", response_model=SearchResponse, responses=MODEL_ERRORS)
async def search(req: SearchRequest, request: Request) -> SearchResponse:
    return await pipeline(request).search(req)


@router.get("/v1/models", response_model=ModelList, responses=error_responses(401, 503, 504))
async def models(request: Request) -> ModelList:
    return ModelList(data=pipeline(request).cards())


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=error_responses(401, 404, 503, 504))
async def model(model_id: str, request: Request) -> ModelCard:
    """One served model by any name it answers to (openai's models.retrieve)."""
    p = pipeline(request)
    for served in (p.encoder, p.reranker):
        if served is not None and model_id in served.names:
            return served.card()
    raise ApiError(404, f"model {model_id!r} is not served here; see GET /v1/models", "not_found")


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(request: Request):
    state = request.app.state
    if state.ready and not state.draining:
        return {"status": "ready"}
    reason = ("draining: shutting down" if state.draining else
              f"model loading failed: {state.load_error}" if state.load_error else "models are still loading")
    return error_response(503, f"not ready: {reason}", "unavailable", {"Retry-After": "5"})


@router.get("/metrics", response_class=PlainTextResponse, responses=error_responses(404))
async def metrics(request: Request) -> Response:
    if request.app.state.settings.metrics_port:
        raise ApiError(404, "metrics are served on their own port (REPRANK_METRICS_PORT)", "not_found")
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
