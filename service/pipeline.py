"""What the routes call: the served models and the search core, with the API's checks and shapes.

A worker process has no store (search answers 404) and may serve only one of the two models.
"""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread

from models.interfaces import Encoded, Scored, Side
from search.core import Searcher, SearchPlan
from service.errors import ApiError
from service.metrics import Metrics
from service.schemas import (
    CollectionInfo,
    DeleteResponse,
    ModelCard,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SearchUsage,
    UpsertResponse,
    Usage,
)
from service.served import ServedModel
from service.settings import Settings
from store import Document, VectorStore, passage_text
from store.documents import Passage
from store.filters import parse_filter
from store.layout import check_name


def require_text(value: str, what: str) -> None:
    if not value.strip():
        raise ApiError(400, f"{what} is empty", "invalid_request")


def check_model(requested: str | None, served: set[str], task: str) -> None:
    if requested is not None and requested not in served:
        raise ApiError(404, f"{task} model {requested!r} is not served here; see GET /v1/models", "not_found")


class Pipeline:
    def __init__(self, settings: Settings, encoder: ServedModel | None, reranker: ServedModel | None,
                 store: VectorStore | None, metrics: Metrics):
        self.settings, self.encoder, self.reranker, self.store = settings, encoder, reranker, store
        self.metrics = metrics
        self.encoder_id = encoder.model_id if encoder else None
        self.reranker_id = reranker.model_id if reranker else None
        self.model_ids = {
            "embedding": encoder.names if encoder else set(),
            "rerank": reranker.names if reranker else set(),
        }
        self.candidates = settings.search_candidates()  # when a search names no count
        self._write_lock = threading.Lock()
        self.searcher = None
        if store is not None and encoder is not None:
            card = encoder.card()  # a vLLM worker's card names no revision: nothing to compare
            identity = {"preset": card.preset, "revision": card.revision} if card.revision else None
            self.searcher = Searcher(store, encoder, reranker, identity=identity,
                                     observe=metrics.observe_stage)

    def cards(self) -> list[ModelCard]:
        return [m.card() for m in (self.encoder, self.reranker) if m is not None]

    async def embed(self, texts: list[str], side: Side, truncate: bool, model: str | None = None) -> Encoded:
        """The one embedding operation every API family's route adapts: checked, then encoded."""
        if self.encoder is None:
            raise ApiError(404, "this worker serves no embedding model", "not_found")
        check_model(model, self.model_ids["embedding"], "embedding")
        if not texts:
            raise ApiError(400, "input is empty", "invalid_request")
        if len(texts) > self.settings.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs is over the limit of {self.settings.max_inputs}", "too_large")
        for i, t in enumerate(texts):
            require_text(t, f"input[{i}]")
        return await self.encoder.embed(texts, side, truncate)

    async def rerank(self, query: str, documents: list[str], truncate: bool, model: str | None = None) -> Scored:
        """The one rerank operation every API family's route adapts: checked, then scored."""
        if self.reranker is None:
            raise ApiError(400, "this server was started without a reranker", "invalid_request")
        check_model(model, self.model_ids["rerank"], "rerank")
        require_text(query, "query")
        if not documents:
            raise ApiError(400, "documents is empty", "invalid_request")
        if len(documents) > self.settings.max_documents:
            raise ApiError(413, f"{len(documents)} documents is over the limit of {self.settings.max_documents}",
                           "too_large")
        for i, d in enumerate(documents):
            require_text(d, f"documents[{i}]")
        return await self.reranker.rerank(query, documents, truncate)

    # Collections: the same encoder, batcher and identity checks as the indexer

    def _writable(self, collection: str) -> None:
        if self.store is None or self.encoder is None:
            raise ApiError(404, "this process runs --role worker: collections are served by the gateway", "not_found")
        try:
            check_name(collection)
        except ValueError as e:
            raise ApiError(422, str(e), "invalid_request") from None

    async def upsert(self, collection: str, docs: list[Document], truncate: bool = False) -> UpsertResponse:
        """Encode the documents' passages through the batcher, then replace them in the store (creating the
        collection on the first write); writes of this process run one at a time."""
        self._writable(collection)
        if not docs:
            raise ApiError(400, "documents is empty", "invalid_request")
        if len(docs) > self.settings.max_inputs:
            raise ApiError(413, f"{len(docs)} documents is over the limit of {self.settings.max_inputs}", "too_large")
        seen: set[str] = set()
        for i, d in enumerate(docs):
            require_text(d.text, f"documents[{i}].text")
            if d.doc_id in seen:
                raise ApiError(400, f"documents[{i}]: id {d.doc_id!r} appears twice", "invalid_request")
            seen.add(d.doc_id)
        passages = [p for d in docs for p in self.encoder.passages(d, self.settings)]
        if len(passages) > self.settings.max_inputs:
            raise ApiError(413, f"these documents make {len(passages)} passages, over the limit of "
                           f"{self.settings.max_inputs} per request; send fewer", "too_large")
        encoded = await self.encoder.embed([passage_text(p.doc) for p in passages], "passage", truncate)
        card = self.encoder.card()
        info = {k: v for k, v in (("model", card.source), ("preset", card.preset), ("revision", card.revision)) if v}
        created = await anyio.to_thread.run_sync(self._write, collection, passages, encoded.vectors, info)
        return UpsertResponse(collection=collection, documents=len(docs), passages=len(passages), created=created,
                              usage=Usage(prompt_tokens=encoded.tokens, total_tokens=encoded.tokens,
                                          truncated_tokens=encoded.truncated_tokens))

    def _write(self, collection: str, passages: list[Passage], vectors, info: dict) -> bool:
        with self._write_lock:
            created = self.store.create_collection(collection, vectors.shape[1], info)  # another encoder's: 409
            self.store.upsert(collection, passages, vectors)
            return created

    async def delete(self, collection: str, ids: list[str]) -> DeleteResponse:
        self._writable(collection)
        if not ids:
            raise ApiError(400, "ids is empty", "invalid_request")
        if len(ids) > self.settings.max_inputs:
            raise ApiError(413, f"{len(ids)} ids is over the limit of {self.settings.max_inputs}", "too_large")

        def run() -> set[str]:
            with self._write_lock:
                present = self.store.existing_doc_ids(collection, ids)
                self.store.delete_documents(collection, ids)
                return present

        present = await anyio.to_thread.run_sync(run)
        return DeleteResponse(collection=collection, deleted=len(present),
                              not_found=[i for i in dict.fromkeys(ids) if i not in present])

    async def collections(self, name: str | None = None) -> list[CollectionInfo]:
        if self.store is None:
            raise ApiError(404, "this process runs --role worker: collections are served by the gateway", "not_found")
        if name is not None:
            self._writable(name)

        def run() -> list[CollectionInfo]:
            out = []
            for n in [name] if name else self.store.list_collections():
                c = self.store.collection_info(n)
                out.append(CollectionInfo(name=n, documents=c["count"], passages=c["passages"], dimensions=c["dim"],
                                          model=c["info"].get("model"), preset=c["info"].get("preset"),
                                          revision=c["info"].get("revision"), created=c.get("created"),
                                          updated=c.get("updated")))
            return out

        return await anyio.to_thread.run_sync(run)

    async def aclose(self) -> None:
        await asyncio.gather(*(m.aclose() for m in (self.encoder, self.reranker) if m is not None))

    def plan(self, req: SearchRequest) -> SearchPlan:
        """The request's search, checked against the limits (413) and the models served (400, 422)."""
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
        candidates = max(req.candidates or self.candidates, req.top_k)
        if candidates > s.max_candidates:
            raise ApiError(413, f"candidates {candidates} is over the limit of {s.max_candidates}", "too_large")
        rerank = self.reranker is not None if req.rerank is None else req.rerank
        if rerank and self.reranker is None:
            raise ApiError(400, "rerank requested but this server was started without a reranker", "invalid_request")
        hybrid = s.hybrid if req.hybrid is None else req.hybrid
        budget = req.budget_ms or s.search_budget_ms
        return SearchPlan(collection, top_k=req.top_k, candidates=candidates, retrieval="hybrid" if hybrid else "dense",
                          rerank=rerank, fusion=req.rerank_fusion or s.rerank_fusion, filter=req.filter,
                          truncate=req.truncate, group_by=req.group_by, budget_s=budget and budget / 1000,
                          min_rerank=s.rerank_min_depth)

    async def search(self, req: SearchRequest) -> SearchResponse:
        if self.searcher is None:
            raise ApiError(404, "this process runs --role worker: search is served by the gateway", "not_found")
        plan = self.plan(req)
        found = await self.searcher.search(req.query, plan)
        if plan.rerank:
            self.metrics.reranked.observe(found.reranked_count)
            if found.limited_by:
                self.metrics.budget_limited.labels(found.limited_by).inc()
        return SearchResponse(
            collection=plan.collection,
            reranked=found.reranked,
            results=[
                SearchHit(id=r.hit.doc_id, score=r.score, retrieval_score=r.hit.score, rerank_score=r.rerank_score,
                          title=r.hit.payload.get("title", ""), text=r.hit.payload.get("text", ""),
                          metadata=r.hit.payload.get("metadata") or {}, passage=r.hit.passage, span=list(r.hit.span))
                for r in found.results
            ],
            timings_ms=found.timings_ms,
            usage=SearchUsage(query_tokens=found.query_tokens, rerank_tokens=found.rerank_tokens,
                              truncated_tokens=found.truncated_tokens, reranked=found.reranked_count,
                              retrieval=found.retrieval,
                              rerank_limited_by=found.limited_by),
        )
