"""OpenAI's embeddings API (`POST /v1/embeddings`): a thin shape adapter over Pipeline.embed."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.routes.common import MODEL_ERRORS, as_base64, as_floats, check_dimensions, pipeline
from service.schemas import Embedding, EmbeddingsRequest, EmbeddingsResponse, Usage
from service.token_ids import texts_of

router = APIRouter(tags=["OpenAI"])

@router.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=MODEL_ERRORS)
async def embeddings(req: EmbeddingsRequest, request: Request) -> EmbeddingsResponse:
    p = pipeline(request)
    check_dimensions(req.dimensions, p.encoder.card().dimensions if p.encoder else None)
    if req.token_ids():  # LangChain's default: cl100k_base ids, decoded to their text
        texts = texts_of(req.input)
    else:
        texts = [req.input] if isinstance(req.input, str) else req.input
    enc = await p.embed(texts, req.input_type, req.truncate, req.model)
    data = as_base64(enc.vectors) if req.encoding_format == "base64" else as_floats(enc.vectors)
    return EmbeddingsResponse(
        data=[Embedding(index=i, embedding=e) for i, e in enumerate(data)],
        model=p.encoder_id,
        usage=Usage(prompt_tokens=enc.tokens, total_tokens=enc.tokens, truncated_tokens=enc.truncated_tokens),
    )
