"""The result caches (service/cache.py) over a real tiny encoder and reranker: the same answers and usage as
the models, keys that change with anything the result depends on, one computation for concurrent
misses, a computation given up by its request redone by the next, and the byte bound."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models import open_encoder, open_reranker
from service.cache import EmbeddingCache, ScoreCache
from service.metrics import Metrics


@pytest.fixture(scope="module")
def models(tiny_llama):
    enc = open_encoder(str(tiny_llama), "smollm2")
    rr = open_reranker(str(tiny_llama), "smollm2-reranker")
    yield enc, rr
    enc.close()
    rr.close()


class Counted:
    """A model's async call, counting the items it was asked to compute."""

    def __init__(self, call):
        self.call, self.items = call, 0

    async def __call__(self, first, second, truncate):
        self.items += len(first if isinstance(first, list) else second)
        return await self.call(first, second, truncate)


def test_cached_embeddings_equal_the_models(models):
    enc, _ = models
    cache, run = EmbeddingCache("rev1", 1 << 20, Metrics()), Counted(enc.embed)

    async def go():
        fresh = await enc.embed(["alpha", "beta gamma"], "query", False)
        first = await cache.embed(["alpha", "beta gamma"], "query", False, run)
        again = await cache.embed(["beta gamma", "alpha", "delta"], "query", False, run)
        return fresh, first, again

    fresh, first, again = asyncio.run(go())
    assert run.items == 3  # alpha and beta gamma once, delta once
    np.testing.assert_allclose(first.vectors, fresh.vectors, atol=1e-6)
    np.testing.assert_allclose(again.vectors[:2], fresh.vectors[::-1], atol=1e-6)
    assert (first.tokens, first.item_tokens) == (fresh.tokens, fresh.item_tokens)
    assert again.item_tokens[:2] == fresh.item_tokens[::-1]


def test_scores_keyed_by_text_truncation_and_revision(models):
    _, rr = models
    metrics = Metrics()
    cache, run = ScoreCache("rev1", 1 << 20, metrics), Counted(rr.rerank)

    async def go():
        a = await cache.rerank("q", ["one", "two"], True, run)
        b = await cache.rerank("q", ["one", "two", "two!"], True, run)  # an edited text is another key
        c = await cache.rerank("q", ["one"], False, run)  # so is the truncate flag
        d = await cache.rerank("q2", ["one"], True, run)  # and the query
        other = ScoreCache("rev2", 1 << 20, metrics)  # another model revision shares nothing
        e = await other.rerank("q", ["one"], True, run)
        return a, b, c, d, e

    a, b, *_ = asyncio.run(go())
    assert run.items == 2 + 1 + 1 + 1 + 1
    assert b.scores[:2] == a.scores and b.relevance[:2] == a.relevance and b.item_tokens[:2] == a.item_tokens
    assert cache.holds(ScoreCache.key("q", "two!", True)) and not cache.holds(ScoreCache.key("q", "three", True))
    assert metrics.cache_hits.labels("rerank")._value.get() == 2
    assert metrics.cache_misses.labels("rerank")._value.get() == 6


def test_concurrent_misses_compute_once(models):
    _, rr = models
    cache, run = ScoreCache("rev", 1 << 20, Metrics()), Counted(rr.rerank)

    async def go():
        return await asyncio.gather(*(cache.rerank("q", ["same doc", "other doc"], True, run) for _ in range(6)))

    results = asyncio.run(go())
    assert run.items == 2
    assert all(r.scores == results[0].scores for r in results)


def test_a_computation_given_up_is_redone_by_its_waiter(models):
    _, rr = models
    cache = ScoreCache("rev", 1 << 20, Metrics())

    async def go():
        gate = asyncio.Event()

        async def slow(query, documents, truncate):
            gate.set()
            await asyncio.sleep(10)

        first = asyncio.ensure_future(cache.rerank("q", ["doc"], True, slow))
        await gate.wait()
        second = asyncio.ensure_future(cache.rerank("q", ["doc"], True, rr.rerank))  # waits for the first
        await asyncio.sleep(0.05)
        first.cancel()
        return await second, await asyncio.gather(first, return_exceptions=True)

    scored, (cancelled,) = asyncio.run(go())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert scored.scores == rr.score("q", ["doc"]).scores
    assert cache.holds(ScoreCache.key("q", "doc", True))


def test_bounded_in_bytes(models):
    enc, _ = models
    metrics = Metrics()
    cache = EmbeddingCache("rev", 20_000, metrics)  # room for a few 256-byte vectors with their overhead
    texts = [f"query number {i}" for i in range(100)]
    asyncio.run(cache.embed(texts, "query", False, enc.embed))
    assert 0 < len(cache._entries) < 100 and cache.bytes <= 20_000
    assert metrics.cache_evictions.labels("embedding")._value.get() == 100 - len(cache._entries)
    assert cache.holds(("query", False, texts[-1])) and not cache.holds(("query", False, texts[0]))  # LRU


def test_a_served_model_keys_its_cache_by_its_weights_revision(tiny_llama, tmp_path):
    """LocalModel's caches carry the revision its card names (a fingerprint of the weight files), so
    results of other weights can never be served; a size of 0 turns the cache off."""
    from service.local import LocalModel

    rr = open_reranker(str(tiny_llama), "smollm2-reranker")
    try:
        served = LocalModel(rr, "rerank", "tiny", Metrics(), "float32", cache_mb=1)
        assert served.cache.revision == served.card().revision and served.cache.revision
        assert LocalModel(rr, "rerank", "tiny", Metrics(), "float32", cache_mb=0).cache is None
    finally:
        rr.close()
