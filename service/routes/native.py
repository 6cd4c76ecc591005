"""reprank's own routes: search, the model list, health, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from service.errors import ApiError, error_response
from service.routes.common import MODEL_ERRORS, pipeline
from service.schemas import (
    CollectionInfo,
    CollectionList,
    DeleteRequest,
    DeleteResponse,
    ModelCard,
    ModelList,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    UpsertResponse,
    error_responses,
)
from store import Document

WRITE_ERRORS = error_responses(400, 401, 404, 409, 413, 422, 429, 503, 504)

router = APIRouter(tags=["reprank"])


@router.post("/v1/search", response_model=SearchResponse, responses=MODEL_ERRORS)
async def search(req: SearchRequest, request: Request) -> SearchResponse:
    return await pipeline(request).search(req)


@router.get("/v1/collections", response_model=CollectionList, responses=error_responses(401, 404, 503, 504))
async def collections(request: Request) -> CollectionList:
    return CollectionList(data=await pipeline(request).collections())


@router.get("/v1/collections/{name}", response_model=CollectionInfo, responses=error_responses(401, 404, 422, 503, 504))
async def collection(name: str, request: Request) -> CollectionInfo:
    return (await pipeline(request).collections(name))[0]


@router.post("/v1/collections/{name}/documents", response_model=UpsertResponse, responses=WRITE_ERRORS)
async def upsert_documents(name: str, req: UpsertRequest, request: Request) -> UpsertResponse:
    """Add or replace documents (by id), creating the collection on its first write."""
    docs = [Document(d.id, d.text, d.title, d.metadata) for d in req.documents]
    return await pipeline(request).upsert(name, docs, req.truncate)


@router.delete("/v1/collections/{name}/documents/{doc_id:path}", response_model=DeleteResponse, responses=WRITE_ERRORS)
async def delete_document(name: str, doc_id: str, request: Request) -> DeleteResponse:
    """Remove a document and every passage of it (404 when the collection has no such document)."""
    out = await pipeline(request).delete(name, [doc_id])
    if out.not_found:
        raise ApiError(404, f"collection {name!r} has no document {doc_id!r}", "not_found")
    return out


@router.post("/v1/collections/{name}/documents/delete", response_model=DeleteResponse, responses=WRITE_ERRORS)
async def delete_documents(name: str, req: DeleteRequest, request: Request) -> DeleteResponse:
    """Remove several documents; ids the collection does not hold come back in not_found."""
    return await pipeline(request).delete(name, req.ids)


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
