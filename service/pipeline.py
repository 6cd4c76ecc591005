"""search = encode query -> ANN (dense, or dense+BM25 fused) -> rerank -> top_k.

Model calls go to service/workers.py (in-process batchers, or remote workers over HTTP); store
calls run in the thread pool. Every stage is timed into the response and into /metrics.
"""

from __future__ import annotations

import asyncio
import time

from starlette.concurrency import run_in_threadpool

from indexer.store import Hit, VectorStore, check_name, parse_filter
from models.encoder import Encoded
from models.reranker import Scored, final_scores
from service.errors import ApiError
from service.metrics import Metrics
from service.schemas import ModelCard, SearchHit, SearchRequest, SearchResponse, SearchUsage
from service.settings import Settings
from service.workers import Model


def require_text(value: str, what: str) -> None:
    if not value.strip():
        raise ApiError(400, f"{what} is empty", "invalid_request")


class Pipeline:
    """The search path over models in this process or on remote workers (service/workers.py).

    A worker process has no store (search answers 404) and may serve only one of the two models.
    """

    def __init__(self, settings: Settings, encoder: Model | None, reranker: Model | None,
                 store: VectorStore | None, metrics: Metrics):
        self.settings, self.encoder, self.reranker, self.store, self.metrics = (
            settings, encoder, reranker, store, metrics)
        self.encoder_id = encoder.model_id if encoder else None
        self.reranker_id = reranker.model_id if reranker else None
        self.model_ids = {
            "embedding": encoder.names if encoder else set(),
            "rerank": reranker.names if reranker else set(),
        }

    def cards(self) -> list[ModelCard]:
        return [m.card() for m in (self.encoder, self.reranker) if m is not None]

    async def embed(self, texts: list[str], side: str, truncate: bool) -> Encoded:
        if self.encoder is None:
            raise ApiError(404, "this worker serves no embedding model", "not_found")
        return await self.encoder.embed(texts, side, truncate)

    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        if self.reranker is None:
            raise ApiError(400, "this server was started without a reranker", "invalid_request")
        return await self.reranker.rerank(query, documents, truncate)

    async def close(self) -> None:
        await asyncio.gather(*(m.close() for m in (self.encoder, self.reranker) if m is not None))

    def _query(self, collection: str, vector, limit: int, filter: dict | None, hybrid_text: str | None) -> list[Hit]:
        """The store query, after checking that the collection's vectors come from the query encoder
        (409 otherwise): a retrained adapter under the same name must not search the old vectors."""
        card = self.encoder.card()
        if card.revision:  # a vLLM worker's card names no preset or revision: nothing to compare
            self.store.check_info(collection, {"preset": card.preset, "revision": card.revision})
        return self.store.query(collection, vector, limit, filter, hybrid_text=hybrid_text)

    async def search(self, req: SearchRequest) -> SearchResponse:
        s = self.settings
        if self.store is None or self.encoder is None:
            raise ApiError(404, "this process runs --role worker: search is served by the gateway", "not_found")
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
        hybrid = s.hybrid if req.hybrid is None else req.hybrid
        if rerank and self.reranker is None:
            raise ApiError(400, "rerank requested but this server was started without a reranker", "invalid_request")

        timings: dict[str, float] = {}
        start = time.perf_counter()
        with self.metrics.timed("encode", timings):
            q = await self.embed([req.query], "query", req.truncate)
        with self.metrics.timed("search", timings):
            hits: list[Hit] = await run_in_threadpool(
                self._query, collection, q.vectors[0], candidates if rerank else req.top_k, req.filter,
                req.query if hybrid else None,
            )
        scores: list[float | None] = [None] * len(hits)
        final = [h.score for h in hits]
        rerank_tokens = truncated = 0
        order = list(range(len(hits)))
        reranked = rerank and bool(hits)
        if reranked:
            with self.metrics.timed("rerank", timings):
                docs = [f"{h.payload.get('title', '')} {h.payload.get('text', '')}".strip() for h in hits]
                scored = await self.rerank(req.query, docs, truncate=True)  # stored passages may be long
            scores, rerank_tokens, truncated = scored.scores, scored.tokens, scored.truncated_tokens
            final = final_scores(scores, req.rerank_fusion or s.rerank_fusion)
            order.sort(key=lambda i: -final[i])  # stable: ties keep retrieval order
        timings["total"] = round((time.perf_counter() - start) * 1000, 2)
        return SearchResponse(
            collection=collection,
            reranked=reranked,
            results=[
                SearchHit(
                    id=hits[i].doc_id,
                    score=final[i],
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
