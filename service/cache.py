"""Result caches of the models this process runs: query embeddings and rerank scores.

A repeated query skips the encoder; a repeated (query, document) pair skips the reranker. A key holds
everything its result depends on: the model's revision (a fingerprint of its weights), the side or the
query, the truncate flag, and the text (a document by a digest of its text), so an edited document or
another model revision is a miss, computed afresh: nothing stale can be served. Each cache is bounded
in bytes (least recently used out first); concurrent requests missing the same item wait for one
computation instead of each running it. Usage (tokens) is kept per item, so a cached answer reports
what the computed one did.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import numpy as np

from models.interfaces import Encoded, Scored, Side
from service.metrics import Metrics

ENTRY_OVERHEAD = 200  # bytes of a key tuple, an entry and its bookkeeping, besides the texts and vectors
_ABANDONED = object()  # the result of an in-flight computation whose request failed or gave up


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class ResultCache:
    """Least-recently-used results by key, within `max_bytes`; used from the event loop only."""

    def __init__(self, name: str, revision: str, max_bytes: int, metrics: Metrics):
        self.name, self.revision, self.max_bytes, self.metrics = name, revision, max_bytes, metrics
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._flight: dict[Hashable, asyncio.Future] = {}
        self.bytes = 0
        metrics.cache_entries.labels(name).set_function(lambda: len(self._entries))
        metrics.cache_bytes.labels(name).set_function(lambda: self.bytes)
        metrics.cache_limit.labels(name).set(max_bytes)

    def holds(self, key: tuple) -> bool:
        """Held, or being computed by another request (so it costs this one no model work)."""
        key = (self.revision, *key)
        return key in self._entries or key in self._flight

    def _put(self, key: Hashable, value: Any, size: int) -> None:
        if size > self.max_bytes:
            return
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
            self.metrics.cache_evictions.labels(self.name).inc()

    async def fetch(self, keys: list[tuple], compute: Callable[[list[int]], Awaitable[list[tuple[Any, int]]]]) -> list:
        """The value of each key: held ones at once, the missing ones by one call of compute(their indices),
        which returns (value, size in bytes) for each; a key another request is computing is awaited."""
        keys = [(self.revision, *k) for k in keys]
        out: list = [None] * len(keys)
        mine: list[int] = []
        waits: dict[int, asyncio.Future] = {}
        loop = asyncio.get_running_loop()
        for i, k in enumerate(keys):
            if k in self._entries:
                self._entries.move_to_end(k)
                out[i] = self._entries[k][0]
            elif k in self._flight:  # another request's, or an earlier copy in this one
                waits[i] = self._flight[k]
            else:
                self._flight[k] = loop.create_future()
                mine.append(i)
        held = len(keys) - len(mine) - len(waits)
        self.metrics.cache_hits.labels(self.name).inc(held)
        self.metrics.cache_misses.labels(self.name).inc(len(mine))  # counted before computing: a failure is a miss
        if mine:
            try:
                computed = await compute(mine)
            except BaseException:  # failed or cancelled: its waiters compute for themselves
                for i in mine:
                    self._flight.pop(keys[i]).set_result(_ABANDONED)
                raise
            for i, (value, size) in zip(mine, computed, strict=True):
                self._flight.pop(keys[i]).set_result(value)
                out[i] = value
                self._put(keys[i], value, size)
        retried = []
        for i, future in waits.items():
            out[i] = await asyncio.shield(future)
            if out[i] is _ABANDONED:
                retried.append(i)
        self.metrics.cache_hits.labels(self.name).inc(len(waits) - len(retried))
        self.metrics.cache_misses.labels(self.name).inc(len(retried))
        if retried:
            for i, (value, size) in zip(retried, await compute(retried), strict=True):
                out[i] = value
                self._put(keys[i], value, size)
        return out


class EmbeddingCache(ResultCache):
    """Query embeddings by (revision, side, truncate, text); passages are not kept (each is embedded once)."""

    def __init__(self, revision: str, max_bytes: int, metrics: Metrics):
        super().__init__("embedding", revision, max_bytes, metrics)

    async def embed(self, texts: list[str], side: Side, truncate: bool,
                    run: Callable[[list[str], Side, bool], Awaitable[Encoded]]) -> Encoded:
        async def compute(idx: list[int]) -> list[tuple[Any, int]]:
            e = await run([texts[i] for i in idx], side, truncate)
            return [((e.vectors[j], e.item_tokens[j], e.item_truncated[j]),
                     e.vectors[j].nbytes + len(texts[i]) + ENTRY_OVERHEAD) for j, i in enumerate(idx)]

        items = await self.fetch([(side, truncate, t) for t in texts], compute)
        tokens, truncated = [t for _, t, _ in items], [c for _, _, c in items]
        return Encoded(np.stack([v for v, _, _ in items]), sum(tokens), sum(truncated), tokens, truncated)


class ScoreCache(ResultCache):
    """Rerank scores by (revision, query, truncate, digest of the document's text)."""

    def __init__(self, revision: str, max_bytes: int, metrics: Metrics):
        super().__init__("rerank", revision, max_bytes, metrics)

    @staticmethod
    def key(query: str, document: str, truncate: bool) -> tuple:
        return query, truncate, digest(document)

    async def rerank(self, query: str, documents: list[str], truncate: bool,
                     run: Callable[[str, list[str], bool], Awaitable[Scored]]) -> Scored:
        async def compute(idx: list[int]) -> list[tuple[Any, int]]:
            s = await run(query, [documents[i] for i in idx], truncate)
            return [((s.scores[j], s.relevance[j], s.item_tokens[j], s.item_truncated[j]),
                     len(query) + ENTRY_OVERHEAD) for j in range(len(idx))]

        items = await self.fetch([self.key(query, d, truncate) for d in documents], compute)
        tokens, truncated = [t for _, _, t, _ in items], [c for _, _, _, c in items]
        return Scored([s for s, _, _, _ in items], sum(tokens), sum(truncated), [r for _, r, _, _ in items],
                      tokens, truncated)
