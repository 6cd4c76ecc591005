"""How a reranked head is ordered: by the rerank score alone, or fused with the retrieval ranks."""

from __future__ import annotations

from typing import Literal

RerankFusion = Literal["rrf", "none"]

# Cormack et al. 2009's constant over 1-based ranks, as in Elasticsearch's RRF; not tuned here. Not the
# hybrid fusion of dense and BM25, which is Qdrant's (store.fusion.QDRANT_RRF_K = 2, 0-based positions).
RERANK_RRF_K = 60


def final_scores(scores: list[float], fusion: RerankFusion = "none") -> list[float]:
    """The rank-deciding scores of candidates given in retrieval order.

    "none": the reranker's scores alone. "rrf": reciprocal-rank fusion of the retrieval rank and the
    rerank rank, 1/(k + r_retrieval) + 1/(k + r_rerank): a small reranker's mistakes are damped by
    the first stage where the two disagree (on held-out train queries it beats either alone,
    benchmarks/RESULTS.md). Equal rerank scores take their rerank ranks in retrieval order.
    """
    if fusion == "none":
        return list(scores)
    if fusion != "rrf":
        raise ValueError(f"unknown rerank fusion {fusion!r}: rrf or none")
    fused = [1 / (RERANK_RRF_K + 1 + i) for i in range(len(scores))]
    for rank, i in enumerate(sorted(range(len(scores)), key=lambda i: (-scores[i], i))):
        fused[i] += 1 / (RERANK_RRF_K + 1 + rank)
    return fused


def order(final: list[float]) -> list[int]:
    """Indexes best first; equal scores keep retrieval order, which the store already breaks by doc id."""
    return sorted(range(len(final)), key=lambda i: (-final[i], i))
