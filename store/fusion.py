"""Dense + BM25 fusion of a hybrid query, computed here so both backends rank exactly alike.

Qdrant's own RRF gives equal fused scores (common: rank 1 + rank 3 ties rank 3 + rank 1) in an
arbitrary order that changes from process to process, so a hybrid eval moved between runs of the
same index. Fusing the two prefetched lists here, with equal scores ordered by document id, keeps
Qdrant's formula and makes the order a function of the collection alone.
"""

from __future__ import annotations

from store.contract import Hit

# Qdrant's default RRF constant (qdrant-client's hybrid/fusion.py DEFAULT_RANKING_CONSTANT_K, and what
# Qdrant Edge's Fusion.Rrf(k=2) computes): a hit at 0-based position p of a list adds 1 / (k + p).
# Not the k = 60 of Cormack et al. with 1-based ranks, which search.fusion uses for the rerank fusion.
QDRANT_RRF_K = 2


def ranked(hits: list[Hit]) -> list[Hit]:
    """Best first, equal scores by document id: the store's one order."""
    return sorted(hits, key=lambda h: (-h.score, h.doc_id, h.passage))


def rrf(lists: list[list[Hit]], limit: int, k: int = QDRANT_RRF_K) -> list[Hit]:
    """Reciprocal-rank fusion of ranked lists; a hit's score becomes its fused score."""
    fused: dict[tuple[str, int], float] = {}
    first: dict[tuple[str, int], Hit] = {}
    for hits in lists:
        for pos, h in enumerate(hits):
            fused[h.key] = fused.get(h.key, 0.0) + 1.0 / (k + pos)
            first.setdefault(h.key, h)
    return ranked([Hit(key[0], s, first[key].payload) for key, s in fused.items()])[:limit]
