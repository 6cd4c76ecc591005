"""Request and response shapes: OpenAI embeddings, Cohere/Jina rerank, and reprank's search."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(value: Any) -> None:
    """JSON may escape a lone UTF-16 surrogate (\\ud800); no tokenizer or store can take one."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise ValueError("text contains a lone UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(k)
            _check_unicode(v)
    elif isinstance(value, list):
        for v in value:
            _check_unicode(v)


class _Request(BaseModel):
    """A field the server does not know is refused (422), never silently dropped."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        _check_unicode(data)
        return data


class EmbeddingsRequest(_Request):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="texts, or token ids of OpenAI's embedding tokenizer (cl100k_base), as OpenAI's API takes "
        "them and LangChain sends them: decoded to their text")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="must equal the encoder's dimensions (400 otherwise): "
                                   "no served model is trained for truncated vectors")
    input_type: Literal["query", "passage"] = "passage"
    truncate: bool = Field(False, description="cut inputs over the model's max length instead of answering 413")
    user: str | None = Field(None, description="accepted for OpenAI compatibility; used for nothing")

    def token_ids(self) -> bool:
        items = [self.input] if isinstance(self.input, str) else self.input
        return any(not isinstance(x, str) for x in items)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    truncated_tokens: int = 0


class EmbeddingsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class RerankDocument(BaseModel):
    text: str


class RerankRequest(_Request):
    query: str
    documents: list[str | RerankDocument]
    model: str | None = None
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    truncate: bool = Field(False, description="cut documents over the model's max length instead of 413")
    raw_scores: bool = Field(False, description="also return each result's raw_score, on the reranker's own "
                             "scale (a score head's logit); relevance_score is always in [0, 1]")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(BaseModel):
    index: int
    relevance_score: float  # in [0, 1]
    raw_score: float | None = None  # with raw_scores: true
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    id: str  # Cohere's v1 response names one
    model: str
    results: list[RerankResult]
    usage: Usage
    meta: dict[str, Any]  # Cohere's: api_version, billed_units


class SearchRequest(_Request):
    query: str
    collection: str | None = Field(None, description="defaults to the collection the server was started with")
    top_k: int = Field(10, ge=1)
    candidates: int | None = Field(None, ge=1, description="retrieved before reranking; at least top_k")
    rerank: bool | None = Field(None, description="defaults to on when a reranker is loaded")
    hybrid: bool | None = Field(None, description="fuse dense and BM25 results (RRF) before reranking "
                                "(default: the server's REPRANK_HYBRID, on)")
    rerank_fusion: Literal["rrf", "none"] | None = Field(
        None, description="rrf: order by RRF of retrieval and rerank ranks; none: rerank score alone "
        "(default: the server's REPRANK_RERANK_FUSION)"
    )
    filter: dict[str, Any] | None = Field(
        None, description='metadata conditions, ANDed: {"field": value | [values] | {"gte": x, "lt": y}}'
    )
    truncate: bool = Field(False, description="cut a query over the model's max length instead of 413")
    group_by: Literal["passage", "document"] = Field(
        "passage", description="passage: every matching passage; document: each document once, at its best "
        "passage (MaxP), with its passage's text and span")
    budget_ms: float | None = Field(None, gt=0, description="answer within this many milliseconds: the "
                                    "rerank goes as deep as fits, the rest keep their retrieval order (default: "
                                    "the server's REPRANK_SEARCH_BUDGET_MS, else the request's timeout)")


class SearchHit(BaseModel):
    id: str = Field(description="the document's id (a long document's passages share it)")
    score: float  # the rank-deciding score: retrieval, rerank, or their RRF fusion (rerank_fusion)
    retrieval_score: float
    rerank_score: float | None = None
    title: str
    text: str = Field(description="the passage's text")
    metadata: dict[str, Any]
    passage: int = Field(0, description="the passage's index in its document (0 unless the document was split)")
    span: list[int] = Field(description="[start, end): the passage's characters in the document's text")


class SearchUsage(BaseModel):
    query_tokens: int
    rerank_tokens: int = 0
    truncated_tokens: int = 0
    reranked: int = Field(0, description="candidates the reranker scored")
    retrieval: Literal["dense", "hybrid", "bm25"] = Field(
        "hybrid", description="the retrieval that ran: the request's, or bm25 when a hybrid search with a "
        "budget could not have its query embedded in time")
    rerank_limited_by: Literal["budget", "queue", "deadline"] | None = Field(
        None, description="why fewer candidates than planned were reranked: budget (this search's own work "
        "did not fit its budget), queue (work queued ahead was in the way), deadline (cut when the time ran out)")


class SearchResponse(BaseModel):
    collection: str
    results: list[SearchHit]
    reranked: bool
    timings_ms: dict[str, float]
    usage: SearchUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "reprank"
    task: Literal["embedding", "rerank"]
    preset: str
    source: str
    revision: str | None = None  # fingerprint of the weights (models.loading.model_revision)
    dimensions: int | None = None
    max_length: int
    pooling: str | None = None  # an encoder's: "last_token", "mean", or "mean_last_N" (LLaRA's N special tokens)
    dtype: str | None = None  # what the weights run in ("float32", "bfloat16"); a remote worker's own card says


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorBody(BaseModel):
    """The one error body of every route (README: errors)."""

    error: ErrorDetail


class TeiErrorBody(BaseModel):
    """TEI's error body, on TEI's paths (service/routes/tei.py)."""

    error: str
    error_type: Literal["Validation", "Overloaded", "Unhealthy", "Backend", "Tokenizer"]


def error_responses(*statuses: int, body: type[BaseModel] = ErrorBody) -> dict:
    """OpenAPI `responses=` for a route's documented error statuses, all with one error body."""
    why = {400: "empty input", 401: "missing or invalid API key", 404: "unknown collection or model",
           409: "the collection was built by another encoder or revision of it",
           413: "too large: body, inputs, documents or an input over the max length", 422: "invalid request",
           429: "queue full; see Retry-After", 503: "not ready, or a dependency is down; see Retry-After",
           504: "the request's deadline passed"}
    return {s: {"model": body, "description": why[s]} for s in statuses}


class DocumentIn(_Request):
    id: str = Field(min_length=1, max_length=512, description="the document's id: a second upsert of it replaces it")
    text: str = Field(description="a document longer than the encoder's window is stored as overlapping passages")
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict, description="returned with hits; filterable")


class UpsertRequest(_Request):
    documents: list[DocumentIn] = Field(description="upserted together; ids must be unique in the request")
    truncate: bool = Field(False, description="cut a passage over the encoder's window instead of 413 (a document "
                           "is split to fit it; only a long title, or a write through a gateway, can overflow)")


class UpsertResponse(BaseModel):
    collection: str
    documents: int
    passages: int = Field(description="points written: more than documents where one was split")
    created: bool = Field(description="this write created the collection")
    usage: Usage


class DeleteRequest(_Request):
    ids: list[str] = Field(description="document ids; ids not in the collection are listed in not_found")


class DeleteResponse(BaseModel):
    collection: str
    deleted: int
    not_found: list[str]


class CollectionInfo(BaseModel):
    name: str
    documents: int
    passages: int = Field(description="stored points; includes those of a write cut short until that document "
                          "is written again")
    dimensions: int
    model: str | None = None
    preset: str | None = None
    revision: str | None = Field(None, description="the encoder's weights' fingerprint: another revision may "
                                 "neither write nor search here")
    created: str | None = None
    updated: str | None = None


class CollectionList(BaseModel):
    data: list[CollectionInfo]
