"""One search: encode the query -> retrieve (dense, hybrid or BM25) -> rerank the head -> fuse -> order.

`/v1/search` (service/pipeline.py) and `reprank eval` (search/evaluate.py) both call `Searcher.search`,
so the figures eval reports are the ranking the service serves. The encoder and reranker are the
seams of models.interfaces (in-process torch engines, or remote workers); the store is any
store.VectorStore. Validation and HTTP shapes stay in the service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import anyio.to_thread

from models.batching import DEADLINE
from models.errors import DeadlineTooShort, QueueFull
from models.interfaces import PairScorer, TextEncoder
from search.budget import LimitedBy, rerank_depth, reserve_s
from search.fusion import RerankFusion, final_scores, order
from store import Hit, VectorStore, passage_text

Retrieval = Literal["dense", "hybrid", "bm25"]
GroupBy = Literal["passage", "document"]
GROUP_FETCH = 3  # grouping by document fetches this many times the passages, since several may share one


@dataclass(frozen=True)
class SearchPlan:
    collection: str
    top_k: int = 10
    candidates: int = 20  # retrieved when reranking (else top_k)
    rerank_depth: int | None = None  # the head that is reranked; None: every candidate
    retrieval: Retrieval = "hybrid"
    rerank: bool = True
    fusion: RerankFusion = "rrf"
    filter: dict | None = None
    truncate: bool = False  # of the query; stored passages are always cut to the reranker's window
    group_by: GroupBy = "passage"  # "document": each document once, at its best passage (MaxP)
    budget_s: float | None = None  # answer within this (search/budget.py); the request's deadline bounds it too
    min_rerank: int = 0  # reranked even when the budget does not allow it


@dataclass
class Ranked:
    hit: Hit
    score: float  # the one that decided the order: fused, rerank or (below the head) retrieval
    rerank_score: float | None = None  # the reranker's relevance in [0, 1] (Scored.relevance)


@dataclass
class Searched:
    results: list[Ranked]
    retrieval: Retrieval  # the plan's, or bm25 when the query could not be embedded in time
    reranked_count: int = 0  # candidates the reranker scored
    limited_by: LimitedBy | None = None  # why fewer than planned (search/budget.py)
    query_tokens: int = 0
    rerank_tokens: int = 0
    truncated_tokens: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def reranked(self) -> bool:
        return self.reranked_count > 0


Observe = Callable[[str, float], None]  # (stage, seconds): the service's stage histogram


class Searcher:
    """Search over one store with one encoder and, optionally, a reranker.

    ``identity`` is the encoder's {"preset", "revision"}: a collection built by another one is refused
    (StoreMismatch) before it is searched, since its vectors live in another space.
    """

    def __init__(self, store: VectorStore, encoder: TextEncoder | None, reranker: PairScorer | None = None, *,
                 identity: dict | None = None, observe: Observe | None = None):
        self.store, self.encoder, self.reranker = store, encoder, reranker
        self.identity, self.observe = identity, observe

    @contextmanager
    def _stage(self, name: str, timings: dict[str, float]) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            timings[name] = round(elapsed * 1000, 2)
            if self.observe:
                self.observe(name, elapsed)

    async def search(self, query: str, plan: SearchPlan) -> Searched:
        if plan.rerank and self.reranker is None:
            raise ValueError("a reranked search needs a reranker")
        out = Searched([], plan.retrieval)
        start, began = time.perf_counter(), time.monotonic()
        deadline = min((t for t in (DEADLINE.get(), plan.budget_s and began + plan.budget_s) if t), default=None)
        until = deadline and deadline - reserve_s(deadline - began)  # the models' work must end by then
        reset = DEADLINE.set(deadline)  # the models' admission refuses work that cannot end by then (429)
        try:
            vector = None
            if plan.retrieval != "bm25":
                vector = await self._encode(query, plan, out, until)
                if vector is None:
                    plan = replace(plan, retrieval="bm25")
            fetch = (plan.candidates if plan.rerank else plan.top_k) * (GROUP_FETCH if plan.group_by == "document"
                                                                         else 1)
            with self._stage("search", out.timings_ms):
                hits = await anyio.to_thread.run_sync(self._retrieve, query, vector, fetch, plan)
            out.results = [Ranked(h, h.score) for h in hits]
            if plan.rerank and hits:
                await self._rerank(query, hits, plan, out, until)
        finally:
            DEADLINE.reset(reset)
        if plan.group_by == "document":
            out.results = best_per_document(out.results)
        out.results = out.results[: plan.top_k]
        out.timings_ms["total"] = round((time.perf_counter() - start) * 1000, 2)
        return out

    async def _encode(self, query: str, plan: SearchPlan, out: Searched, until: float | None):
        """The query's vector; None when a hybrid search with a budget cannot have it in time (the encoder
        refuses it, or it is not done by `until`): it answers from BM25 alone rather than late or 429."""
        fallback = plan.budget_s is not None and plan.retrieval == "hybrid" and until is not None
        try:
            with self._stage("encode", out.timings_ms):
                q = await asyncio.wait_for(self.encoder.embed([query], "query", plan.truncate),
                                           max(until - time.monotonic(), 0.0) if fallback else None)
        except (TimeoutError, QueueFull, DeadlineTooShort):
            if not fallback:
                raise
            out.retrieval = "bm25"
            return None
        out.query_tokens, out.truncated_tokens = q.tokens, q.truncated_tokens
        return q.vectors[0]

    async def _rerank(self, query: str, hits: list[Hit], plan: SearchPlan, out: Searched, until: float | None) -> None:
        """Rerank the head of `hits` in place in out.results: as deep as the time `until` allows."""
        planned = min(plan.rerank_depth or plan.candidates, len(hits))
        texts = [passage_text(h.document) for h in hits[:planned]]
        depth, timeout = planned, None
        if until is not None:
            cost = await self.reranker.cost(query, texts, True)
            depth, out.limited_by = rerank_depth(cost, planned, until - time.monotonic(), plan.min_rerank)
            if depth > plan.min_rerank:  # a minimum is reranked whatever it takes
                timeout = max(until - time.monotonic(), 0.0)
        if not depth:
            return
        try:
            with self._stage("rerank", out.timings_ms):
                scored = await asyncio.wait_for(self.reranker.rerank(query, texts[:depth], True), timeout)
        except TimeoutError:
            out.limited_by = "deadline"
            return
        except (QueueFull, DeadlineTooShort) as e:  # the queue grew since the estimate: answer unreranked
            if until is None:
                raise
            out.limited_by = "queue" if isinstance(e, QueueFull) else "budget"
            return
        final = final_scores(scored.scores, plan.fusion)
        out.results[:depth] = [Ranked(hits[i], final[i], scored.relevance[i]) for i in order(final)]
        out.reranked_count = depth
        out.rerank_tokens = scored.tokens
        out.truncated_tokens += scored.truncated_tokens

    def _retrieve(self, query: str, vector, limit: int, plan: SearchPlan) -> list[Hit]:
        if plan.retrieval == "bm25":
            return self.store.query_bm25(plan.collection, query, limit, plan.filter)
        if self.identity:
            self.store.check_info(plan.collection, self.identity)
        hybrid_text = query if plan.retrieval == "hybrid" else None
        return self.store.query(plan.collection, vector, limit, plan.filter, hybrid_text=hybrid_text)


def best_per_document(results: list[Ranked]) -> list[Ranked]:
    """Each document once, where its best passage ranks (MaxP: a document scores as its best passage)."""
    seen: set[str] = set()
    return [r for r in results if not (r.hit.doc_id in seen or seen.add(r.hit.doc_id))]
