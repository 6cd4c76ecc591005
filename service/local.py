"""Models in this process: the torch engine's Encoder and Reranker, counted into /metrics."""

from __future__ import annotations

import logging

import anyio.to_thread

from indexer.passages import split, window_for
from models.errors import QueueFull
from models.interfaces import Encoded, RerankCost, Scored, Side
from models.loading import model_revision
from models.runtime import ModelRuntime
from service.cache import EmbeddingCache, ScoreCache
from service.metrics import Metrics
from service.schemas import ModelCard
from service.served import Task, served_names
from service.settings import Settings
from store.documents import Document, Passage

log = logging.getLogger(__name__)


class LocalModel:
    """A ServedModel over an in-process Encoder or Reranker; its calls join the shared batcher."""

    def __init__(self, runtime: ModelRuntime, task: Task, model_arg: str, metrics: Metrics, dtype: str,
                 cache_mb: float = 0.0):
        self.runtime, self.task, self.model_id, self.metrics = runtime, task, model_arg, metrics
        self._window = None  # the passage window, from the settings on the first write
        self.names = served_names(model_arg, runtime.preset.name)
        revision = model_revision(runtime.model.source)
        self._card = ModelCard(  # fixed for the process's life; search reads it on every request
            id=model_arg, task=task, preset=runtime.preset.name, source=runtime.model.source, revision=revision,
            dimensions=getattr(runtime, "dim", None) if task == "embedding" else None,
            max_length=runtime.preset.max_length, pooling=_pooling(runtime) if task == "embedding" else None,
            dtype=dtype)
        caching = EmbeddingCache if task == "embedding" else ScoreCache
        self.cache = caching(revision, int(cache_mb * 2**20), metrics) if cache_mb > 0 else None

    def card(self) -> ModelCard:
        return self._card

    async def _join(self, *args):
        try:
            result = await self.runtime.join(*args)
        except QueueFull:
            self.metrics.rejected.labels(self.model_id).inc()
            raise
        if result.truncated_tokens:
            self.metrics.truncated.labels(self.model_id).inc(result.truncated_tokens)
        return result

    async def embed(self, texts: list[str], side: Side, truncate: bool) -> Encoded:
        if self.cache is None or side != "query":
            return await self._join(texts, side, truncate)
        return await self.cache.embed(texts, side, truncate, self._join)

    def passages(self, doc: Document, settings: Settings) -> list[Passage]:
        """A document as the indexer stores it: split by this encoder's tokenizer when over its window."""
        if self._window is None:
            self._window = window_for(self.runtime, settings.passage_tokens, settings.passage_stride)
        return split(doc, self.runtime.tokenizer, self._window)

    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        if self.cache is None:
            return await self._join(query, documents, truncate)
        return await self.cache.rerank(query, documents, truncate, self._join)

    async def cost(self, query: str, documents: list[str], truncate: bool) -> RerankCost | None:
        """The reranker's estimate, a cached document (or one another request is scoring) costing nothing."""
        held = [self.cache is not None and self.cache.holds(ScoreCache.key(query, d, truncate)) for d in documents]
        return await anyio.to_thread.run_sync(self.runtime.estimate, query, documents, held)

    async def aclose(self) -> None:
        await self.runtime.aclose()


def _pooling(runtime: ModelRuntime) -> str:
    n = runtime.preset.pool_last
    return "mean" if n == 0 else "last_token" if n == 1 else f"mean_last_{n}"


def load_local(settings: Settings, metrics: Metrics) -> tuple[LocalModel | None, LocalModel | None]:
    """Load (and warm up) this process's encoder and reranker; runs in a thread: it takes seconds."""
    from models import open_encoder, open_reranker

    def start(opener, name: str, preset: str | None, task: Task, warm_up, cache_mb: float) -> LocalModel:
        runtime = opener(name, preset, on_batch=metrics.on_batch(name), max_queue_tokens=settings.max_queue_tokens,
                         deadline_admission=settings.deadline_admission, **settings.model_kwargs(task))
        if settings.warmup:
            warm_up(runtime)
        metrics.watch_queue(name, runtime.batcher)
        dtype = str(settings.torch_dtype()).removeprefix("torch.")
        log.info("%s %s on %s in %s (dtype %s%s)", task, name, settings.torch_device(), dtype, settings.dtype,
                 f": {settings.dtype_reason()}" if settings.dtype == "auto" else "")
        return LocalModel(runtime, task, name, metrics, dtype, cache_mb)

    encoder = start(open_encoder, settings.model, settings.model_preset, "embedding",
                    lambda e: e.encode(["warm-up query"], "query"),
                    settings.embedding_cache_mb) if settings.model != "none" else None
    reranker = start(open_reranker, settings.reranker, settings.reranker_preset, "rerank",
                     lambda r: r.score("warm-up query", ["warm-up document"]),
                     settings.rerank_cache_mb) if settings.reranker != "none" else None
    return encoder, reranker
