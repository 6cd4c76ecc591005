"""Hugging Face text-embeddings-inference's routes, so TEI clients (huggingface_hub's InferenceClient,
LlamaIndex's TextEmbeddingsInference, LangChain's TEI classes) work unchanged: thin shape adapters
over Pipeline.embed and Pipeline.rerank. Errors on these paths come in TEI's body,
{"error", "error_type"} (service/errors.py). Field names follow TEI's router/src/http/types.rs."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from service.errors import ApiError
from service.routes.common import as_floats, best_first, check_dimensions, pipeline
from service.schemas import TeiErrorBody, _Request, error_responses

router = APIRouter(tags=["TEI"])
TEI_ERRORS = error_responses(400, 401, 404, 413, 422, 429, 503, 504, body=TeiErrorBody)
SIDES = {None: "passage", "passage": "passage", "document": "passage", "query": "query"}


class TeiEmbedRequest(_Request):
    inputs: str | list[str]
    normalize: bool = Field(True, description="false is refused: this encoder's vectors are unit length by design")
    truncate: bool = False
    truncation_direction: Literal["Right", "Left"] = Field("Right", description="Left is refused: texts are cut "
                                                           "at their end")
    prompt_name: str | None = Field(None, description="query: the encoder's query prompt; passage or document "
                                    "(or none): its passage prompt")
    dimensions: int | None = Field(None, ge=1, description="must equal the encoder's dimensions")


class TeiRerankRequest(_Request):
    query: str
    texts: list[str]
    truncate: bool = False
    truncation_direction: Literal["Right", "Left"] = "Right"
    raw_scores: bool = Field(False, description="the reranker's own scores (a score head's logits) instead of "
                             "relevance in [0, 1]")
    return_text: bool = False


class TeiPredictRequest(_Request):
    inputs: list[str] | list[list[str]] = Field(description="a [query, text] pair, or a batch of them: the "
                                                "served classifier is a reranker")
    truncate: bool = False
    raw_scores: bool = False


def _cut_right(direction: str) -> None:
    if direction != "Right":
        raise ApiError(400, "truncation_direction Left is not supported: texts are cut at their end", "invalid_request")


@router.post("/embed", responses=TEI_ERRORS)
async def embed(req: TeiEmbedRequest, request: Request) -> list[list[float]]:
    p = pipeline(request)
    _cut_right(req.truncation_direction)
    if not req.normalize:
        raise ApiError(400, "normalize false is not supported: this encoder's vectors are L2-normalised by its "
                       "preset", "invalid_request")
    if req.prompt_name not in SIDES:
        raise ApiError(400, f"prompt_name {req.prompt_name!r}: use query, or passage (the default)", "invalid_request")
    check_dimensions(req.dimensions, p.encoder.card().dimensions if p.encoder else None)
    texts = [req.inputs] if isinstance(req.inputs, str) else req.inputs
    return as_floats((await p.embed(texts, SIDES[req.prompt_name], req.truncate)).vectors)


@router.post("/rerank", responses=TEI_ERRORS)
async def rerank(req: TeiRerankRequest, request: Request) -> list[dict[str, Any]]:
    _cut_right(req.truncation_direction)
    scored = await pipeline(request).rerank(req.query, req.texts, req.truncate)
    scores = scored.scores if req.raw_scores else scored.relevance
    return [{"index": i, "score": scores[i], **({"text": req.texts[i]} if req.return_text else {})}
            for i in best_first(scored.scores, None)]


@router.post("/predict", responses=TEI_ERRORS)
async def predict(req: TeiPredictRequest, request: Request) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """A reranker as TEI serves one: each [query, text] pair gets one score, label LABEL_0."""
    single = bool(req.inputs) and isinstance(req.inputs[0], str)
    pairs = [req.inputs] if single else req.inputs
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ApiError(400, "inputs must be a [query, text] pair or a batch of them: the served classifier is "
                       "a reranker", "invalid_request")
    p = pipeline(request)
    out: list[list[dict[str, Any]]] = [[] for _ in pairs]
    by_query: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        by_query.setdefault(query, []).append(i)
    for query, rows in by_query.items():  # one rerank call per distinct query
        scored = await p.rerank(query, [pairs[i][1] for i in rows], req.truncate)
        scores = scored.scores if req.raw_scores else scored.relevance
        for i, s in zip(rows, scores, strict=True):
            out[i] = [{"score": s, "label": "LABEL_0"}]
    return out[0] if single else out


_ANY_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [
    {"$ref": f"#/components/schemas/{m}"} for m in ("TeiEmbedRequest", "TeiRerankRequest", "TeiPredictRequest")]}}}}}


@router.post("/", responses=TEI_ERRORS, openapi_extra=_ANY_BODY)
async def dispatch(request: Request):
    """TEI's root route, which huggingface_hub's InferenceClient(base_url=...) calls: by the body's shape,
    a rerank ({query, texts}), a prediction (pairs) or an embedding (texts)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    try:
        body = await request.json()
    except ValueError:
        raise ApiError(422, "the body is not JSON", "invalid_request") from None
    try:
        if isinstance(body, dict) and "query" in body:
            return await rerank(TeiRerankRequest.model_validate(body), request)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], list):
            return await predict(TeiPredictRequest.model_validate(body), request)
        return await embed(TeiEmbedRequest.model_validate(body), request)
    except ValidationError as e:
        raise RequestValidationError(jsonable_encoder(e.errors())) from None


@router.get("/info", responses=error_responses(401, 503, 504, body=TeiErrorBody))
async def info(request: Request) -> dict[str, Any]:
    p = pipeline(request)
    s = p.settings
    enc, rr = (m.card() if m else None for m in (p.encoder, p.reranker))
    main = enc or rr
    model_type = ({"embedding": {"pooling": enc.pooling or "unknown"}} if enc else
                  {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}})
    return {"model_id": main.id, "model_sha": main.revision, "model_dtype": s.dtype, "model_type": model_type,
            # requests of the max length the bounded queue admits at once: it is bounded in tokens, not requests
            "max_concurrent_requests": s.max_queue_tokens // main.max_length, "max_input_length": main.max_length,
            "max_batch_tokens": s.batch_tokens(), "max_batch_requests": s.max_batch_size,
            "max_client_batch_size": s.max_inputs, "auto_truncate": False, "tokenization_workers": 1,
            "version": request.app.version, "sha": None, "docker_label": None,
            "reranker": rr.model_dump() if rr and enc else None}  # reprank serves both in one process


@router.get("/health", response_class=Response, responses=error_responses(503, body=TeiErrorBody))
async def health(request: Request) -> Response:
    """200 once the models answer (TEI's readiness), 503 before that."""
    pipeline(request)
    return Response(status_code=200)
