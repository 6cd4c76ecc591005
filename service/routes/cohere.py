"""Cohere's rerank and embed APIs (v1 and v2; Jina's rerank shape is Cohere's v1), as thin shape
adapters over Pipeline.rerank and Pipeline.embed. Field names follow the cohere SDK's own types
(cohere 7.x: v2/raw_client.py, types/embed_by_type_response_embeddings.py)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from models.interfaces import Scored
from service.errors import ApiError
from service.routes.common import MODEL_ERRORS, as_base64, as_floats, best_first, check_dimensions, pipeline
from service.schemas import RerankDocument, RerankRequest, RerankResponse, RerankResult, Usage, _Request

router = APIRouter(tags=["Cohere"])

# Cohere's input types onto the encoder's two sides. Classification and clustering embed a text for
# itself, not as a question about other texts: the passage side, which both sides of a pair share.
SIDES = {"search_query": "query", "search_document": "passage", "classification": "passage",
         "clustering": "passage"}
EmbeddingType = Literal["float", "base64", "binary", "ubinary", "int8", "uint8"]


def _refuse(field: str, why: str) -> ApiError:
    return ApiError(400, f"{field} is not supported here: {why}", "invalid_request")


def _meta(version: str, scored: Scored | None = None, tokens: int = 0) -> dict[str, Any]:
    units = {"search_units": 1} if scored is not None else {"input_tokens": tokens}
    return {"api_version": {"version": version}, "billed_units": units,
            "tokens": {"input_tokens": scored.tokens if scored is not None else tokens}}


def _max_tokens(value: int | None, field: str, window: int) -> None:
    """Cohere cuts each text to `value` tokens; this model cuts at its window, so only a value the
    window does not undercut can be honoured."""
    if value is not None and value < window:
        raise _refuse(f"{field} {value}", f"this model cuts texts at its window of {window} tokens; "
                      f"pass at least {window}, or omit it")


# -- rerank


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=MODEL_ERRORS)
async def rerank_v1(req: RerankRequest, request: Request) -> RerankResponse:
    """Cohere v1 and Jina: documents as strings or {text}, optional documents echoed back."""
    p = pipeline(request)
    docs = req.texts()
    scored = await p.rerank(req.query, docs, req.truncate, req.model)
    return RerankResponse(
        id=str(uuid.uuid4()), model=p.reranker_id,
        results=[RerankResult(index=i, relevance_score=scored.relevance[i],
                              raw_score=scored.scores[i] if req.raw_scores else None,
                              document=RerankDocument(text=docs[i]) if req.return_documents else None)
                 for i in best_first(scored.scores, req.top_n)],
        usage=Usage(prompt_tokens=scored.tokens, total_tokens=scored.tokens, truncated_tokens=scored.truncated_tokens),
        meta=_meta("1", scored),
    )


class RerankV2Request(_Request):
    model: str | None = None
    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1, description="honoured when not below the model's window")
    relevant_spans: Any = Field(None, description="refused (400): not supported")
    priority: int | None = Field(None, description="refused (400): requests are served in arrival order")
    raw_scores: bool = Field(False, description="reprank's extra: each result's raw_score as well")


class RerankV2Result(BaseModel):
    index: int
    relevance_score: float
    raw_score: float | None = None


class RerankV2Response(BaseModel):
    id: str
    results: list[RerankV2Result]
    meta: dict[str, Any]


@router.post("/v2/rerank", response_model=RerankV2Response, response_model_exclude_none=True, responses=MODEL_ERRORS)
async def rerank_v2(req: RerankV2Request, request: Request) -> RerankV2Response:
    """Cohere v2 (cohere.ClientV2, LangChain's and LlamaIndex's CohereRerank): long documents are cut,
    as Cohere cuts them, at the reranker's window."""
    p = pipeline(request)
    if req.relevant_spans is not None:
        raise _refuse("relevant_spans", "this reranker scores whole documents")
    if req.priority is not None:
        raise _refuse("priority", "requests are served in arrival order")
    if p.reranker is not None:
        _max_tokens(req.max_tokens_per_doc, "max_tokens_per_doc", p.reranker.card().max_length)
    scored = await p.rerank(req.query, req.documents, True, req.model)
    return RerankV2Response(
        id=str(uuid.uuid4()),
        results=[RerankV2Result(index=i, relevance_score=scored.relevance[i],
                                raw_score=scored.scores[i] if req.raw_scores else None)
                 for i in best_first(scored.scores, req.top_n)],
        meta=_meta("2", scored),
    )


# -- embed


class CohereEmbedRequest(_Request):
    model: str | None = None
    input_type: Literal["search_query", "search_document", "classification", "clustering", "image"] | None = None
    texts: list[str] | None = None
    images: list[Any] | None = Field(None, description="refused (400): text models only")
    inputs: list[Any] | None = Field(None, description="refused (400): pass texts")
    embedding_types: list[EmbeddingType] | None = None
    truncate: Literal["NONE", "START", "END"] | None = Field(None, description="END (the default) cuts the end of a "
                                                               "long text; START is refused; NONE answers 413")
    max_tokens: int | None = Field(None, ge=1, description="honoured when not below the model's window")
    output_dimension: int | None = Field(None, ge=1, description="must equal the encoder's dimensions")
    priority: int | None = Field(None, description="refused (400)")


def _embeddings(vectors: np.ndarray, kinds: list[str]) -> dict[str, list]:
    out: dict[str, list] = {}
    for kind in kinds:
        if kind == "float":
            out["float"] = as_floats(vectors)
        elif kind == "base64":
            out["base64"] = as_base64(vectors)
        elif kind in ("binary", "ubinary"):  # one sign bit per dimension, packed 8 to a byte (Cohere's layout)
            packed = np.packbits(vectors > 0, axis=1)
            out[kind] = (packed.astype(np.int16) - 128).tolist() if kind == "binary" else packed.tolist()
    return out


async def _embed(req: CohereEmbedRequest, request: Request, version: str) -> dict[str, Any]:
    p = pipeline(request)
    if req.images or req.inputs or req.input_type == "image":
        raise _refuse("images" if req.images or req.input_type == "image" else "inputs", "pass texts to a text model")
    if req.input_type is None:
        raise ApiError(400, "input_type is required: search_query or search_document (classification and "
                       "clustering embed as documents)", "invalid_request")
    if req.priority is not None:
        raise _refuse("priority", "requests are served in arrival order")
    if req.truncate == "START":
        raise _refuse("truncate START", "a long text is cut at its end (END), or refused with 413 (NONE)")
    if uncalibrated := {"int8", "uint8"} & set(req.embedding_types or ()):
        raise _refuse(f"embedding type {sorted(uncalibrated)[0]}", "Cohere's int8/uint8 need a calibration this "
                      "model has not; use float, base64, binary or ubinary")
    card = p.encoder.card() if p.encoder else None
    check_dimensions(req.output_dimension, card.dimensions if card else None)
    if card is not None:
        _max_tokens(req.max_tokens, "max_tokens", card.max_length)
    texts = req.texts or []
    enc = await p.embed(texts, SIDES[req.input_type], req.truncate != "NONE", req.model)
    meta = _meta(version, tokens=enc.tokens)
    if version == "1" and req.embedding_types is None:
        return {"id": str(uuid.uuid4()), "response_type": "embeddings_floats", "embeddings": as_floats(enc.vectors),
                "texts": texts, "meta": meta}
    return {"id": str(uuid.uuid4()), "response_type": "embeddings_by_type", "texts": texts, "meta": meta,
            "embeddings": _embeddings(enc.vectors, req.embedding_types or ["float"])}


@router.post("/v1/embed", responses=MODEL_ERRORS)
async def embed_v1(req: CohereEmbedRequest, request: Request) -> dict[str, Any]:
    """Cohere v1 (cohere.Client.embed): floats unless embedding_types names others."""
    return await _embed(req, request, "1")


@router.post("/v2/embed", responses=MODEL_ERRORS)
async def embed_v2(req: CohereEmbedRequest, request: Request) -> dict[str, Any]:
    """Cohere v2 (cohere.ClientV2.embed, LangChain's CohereEmbeddings): embeddings by type."""
    return await _embed(req, request, "2")
