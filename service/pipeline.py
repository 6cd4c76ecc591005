"""search = encode query -> ANN (dense, or dense+BM25 fused) -> rerank -> top_k.

Model calls join the shared batchers (tokenizing off the event loop); store calls run in the
thread pool. Every stage is timed into the response and into /metrics.
"""

from __future__ import annotations

import asyncio
import time

from starlette.concurrency import run_in_threadpool

from indexer.store import Hit, VectorStore, check_name, parse_filter
from models.encoder import Encoded, Encoder
from models.errors import QueueFull
from models.reranker import Reranker, Scored
from service.errors import ApiError
from service.metrics import Metrics
from service.schemas import ModelCard, SearchHit, SearchRequest, SearchResponse, SearchUsage
from service.settings import Settings


def require_text(value: str, what: str) -> None:
    if not value.strip():
        raise ApiError(400, f"{what} is empty", "invalid_request")


def _names(model_arg: str, preset: str) -> set[str]:
    """A served model answers to its --model value, its folder name and its preset name."""
    return {model_arg, model_arg.rstrip("/").split("/")[-1], preset}


class Pipeline:
    def __init__(self, settings: Settings, encoder: Encoder, reranker: Reranker | None, store: VectorStore,
                 metrics: Metrics):
        self.settings, self.encoder, self.reranker, self.store, self.metrics = (
            settings, encoder, reranker, store, metrics)
        self.encoder_id = settings.model
        self.reranker_id = settings.reranker if reranker else None
        self.model_ids = {
            "embedding": _names(settings.model, encoder.preset.name),
            "rerank": _names(settings.reranker, reranker.preset.name) if reranker else set(),
        }

    def cards(self) -> list[ModelCard]:
        e, r = self.encoder, self.reranker
        cards = [ModelCard(id=self.encoder_id, task="embedding", preset=e.preset.name, source=e.model.source,
                           dimensions=e.dim, max_length=e.preset.max_length)]
        if r is not None:
            cards.append(ModelCard(id=self.reranker_id, task="rerank", preset=r.preset.name, source=r.model.source,
                                   max_length=r.preset.max_length))
        return cards

    async def _join(self, model_id: str, submit, *args):
        try:
            future = await run_in_threadpool(submit, *args)
        except QueueFull:
            self.metrics.rejected.labels(model_id).inc()
            raise
        result = await asyncio.wrap_future(future)
        if result.truncated_tokens:
            self.metrics.truncated.labels(model_id).inc(result.truncated_tokens)
        return result

    async def embed(self, texts: list[str], side: str, truncate: bool) -> Encoded:
        return await self._join(self.encoder_id, self.encoder.submit, texts, side, truncate)

    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        if self.reranker is None:
            raise ApiError(400, "this server was started without a reranker", "invalid_request")
        return await self._join(self.reranker_id, self.reranker.submit, query, documents, truncate)

    async def search(self, req: SearchRequest) -> SearchResponse:
        s = self.settings
        require_text(req.query, "query")
        collection = req.collection or s.collection
        try:
            check_name(collection)
            parse_filter(req.filter)
        except ValueError as e:
            raise ApiError(422, str(e), "invalid_request") from None
        if req.top_k > s.max_top_k:
            raise ApiError(413, f"top_k {req.top_k} is over the limit of {s.max_top_k}", "too_large")
        candidates = max(req.candidates or s.default_candidates, req.top_k)
        if candidates > s.max_candidates:
            raise ApiError(413, f"candidates {candidates} is over the limit of {s.max_candidates}", "too_large")
        rerank = self.reranker is not None if req.rerank is None else req.rerank
        if rerank and self.reranker is None:
            raise ApiError(400, "rerank requested but this server was started without a reranker", "invalid_request")

        timings: dict[str, float] = {}
        start = time.perf_counter()
        with self.metrics.timed("encode", timings):
            q = await self.embed([req.query], "query", req.truncate)
        with self.metrics.timed("search", timings):
            hits: list[Hit] = await run_in_threadpool(
                self.store.query, collection, q.vectors[0], candidates if rerank else req.top_k, req.filter,
                hybrid_text=req.query if req.hybrid else None,
            )
        scores: list[float | None] = [None] * len(hits)
        rerank_tokens = truncated = 0
        order = list(range(len(hits)))
        reranked = rerank and bool(hits)
        if reranked:
            with self.metrics.timed("rerank", timings):
                docs = [f"{h.payload.get('title', '')} {h.payload.get('text', '')}".strip() for h in hits]
                scored = await self.rerank(req.query, docs, truncate=True)  # stored passages may be long
            scores, rerank_tokens, truncated = scored.scores, scored.tokens, scored.truncated_tokens
            order.sort(key=lambda i: -scores[i])
        timings["total"] = round((time.perf_counter() - start) * 1000, 2)
        return SearchResponse(
            collection=collection,
            reranked=reranked,
            results=[
                SearchHit(
                    id=hits[i].doc_id,
                    score=scores[i] if scores[i] is not None else hits[i].score,
                    retrieval_score=hits[i].score,
                    rerank_score=scores[i],
                    title=hits[i].payload.get("title", ""),
                    text=hits[i].payload.get("text", ""),
                    metadata=hits[i].payload.get("metadata") or {},
                )
                for i in order[: req.top_k]
            ],
            timings_ms=timings,
            usage=SearchUsage(query_tokens=q.tokens, rerank_tokens=rerank_tokens,
                              truncated_tokens=q.truncated_tokens + truncated),
        )
