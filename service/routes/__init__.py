"""The HTTP routes, one module per API family: native (search, models, health), OpenAI (embeddings),
Cohere (rerank and embed, v1 and v2), TEI (embed, rerank, predict, info, health). Each is a thin shape adapter over the one implementation of
its operation in service.pipeline.Pipeline."""

from __future__ import annotations

from fastapi import APIRouter

from service.routes import cohere, native, openai, tei

router = APIRouter()
for family in (native, openai, cohere, tei):
    router.include_router(family.router)
