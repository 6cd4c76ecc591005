"""Thin handlers: validate, call the pipeline, shape the answer."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from service.errors import ApiError, error_response
from service.pipeline import Pipeline, require_text
from service.schemas import (
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelList,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    SearchRequest,
    SearchResponse,
    Usage,
    error_responses,
)

router = APIRouter()
MODEL_ERRORS = error_responses(400, 401, 404, 413, 422, 429, 503, 504)


def pipeline(request: Request) -> Pipeline:
    state = request.app.state
    if not state.ready:
        reason = f"model loading failed: {state.load_error}" if state.load_error else "models are still loading"
        raise ApiError(503, f"not ready: {reason}", "unavailable", {"Retry-After": "5"})
    return state.pipeline


def check_model(requested: str | None, served: set[str], task: str) -> None:
    if requested is not None and requested not in served:
        raise ApiError(404, f"{task} model {requested!r} is not served here; see GET /v1/models", "not_found")


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=MODEL_ERRORS)
async def embeddings(req: EmbeddingsRequest, request: Request) -> EmbeddingsResponse:
    p = pipeline(request)
    check_model(req.model, p.model_ids["embedding"], "embedding")
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        raise ApiError(400, "input is empty", "invalid_request")
    if len(texts) > p.settings.max_inputs:
        raise ApiError(413, f"{len(texts)} inputs is over the limit of {p.settings.max_inputs}", "too_large")
    for i, t in enumerate(texts):
        require_text(t, f"input[{i}]")
    enc = await p.embed(texts, req.input_type, req.truncate)
    if req.encoding_format == "base64":
        data = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in enc.vectors]
    else:
        data = [v.astype(np.float32).tolist() for v in enc.vectors]
    return EmbeddingsResponse(
        data=[Embedding(index=i, embedding=e) for i, e in enumerate(data)],
        model=p.encoder_id,
        usage=Usage(prompt_tokens=enc.tokens, total_tokens=enc.tokens, truncated_tokens=enc.truncated_tokens),
    )


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=MODEL_ERRORS)
async def rerank(req: RerankRequest, request: Request) -> RerankResponse:
    p = pipeline(request)
    check_model(req.model, p.model_ids["rerank"], "rerank")
    require_text(req.query, "query")
    docs = req.texts()
    if not docs:
        raise ApiError(400, "documents is empty", "invalid_request")
    if len(docs) > p.settings.max_documents:
        raise ApiError(413, f"{len(docs)} documents is over the limit of {p.settings.max_documents}", "too_large")
    for i, d in enumerate(docs):
        require_text(d, f"documents[{i}]")
    scored = await p.rerank(req.query, docs, req.truncate)
    order = sorted(range(len(docs)), key=lambda i: -scored.scores[i])[: req.top_n or len(docs)]
    return RerankResponse(
        model=p.reranker_id,
        results=[
            RerankResult(index=i, relevance_score=scored.scores[i],
                         document=RerankDocument(text=docs[i]) if req.return_documents else None)
            for i in order
        ],
        usage=Usage(prompt_tokens=scored.tokens, total_tokens=scored.tokens, truncated_tokens=scored.truncated_tokens),
    )


@router.post("/v1/search", response_model=SearchResponse, responses=MODEL_ERRORS)
async def search(req: SearchRequest, request: Request) -> SearchResponse:
    return await pipeline(request).search(req)


@router.get("/v1/models", response_model=ModelList, responses=error_responses(401, 503, 504))
async def models(request: Request) -> ModelList:
    return ModelList(data=pipeline(request).cards())


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
