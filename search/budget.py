"""A search's latency budget: how many candidates it can rerank and still answer in time.

Before reranking, the search asks its reranker what each prefix of the candidates would cost now
(models.interfaces.RerankCost: the measured token rate, the work queued ahead, cached pairs free) and
reranks the deepest prefix that fits the time left, less a reserve for what follows; the rest keep
their retrieval order below. A rerank still running when the time is up is abandoned and the answer
falls back to retrieval order, so the budget holds even where the estimate was wrong. Why a search
reranked fewer than planned: "budget" (its own work does not fit), "queue" (it would, but for the work
queued ahead of it) or "deadline" (cut when the time ran out: a wrong estimate, or a reranker that
cannot estimate, as a gateway's).
"""

from __future__ import annotations

from typing import Literal

from models.interfaces import RerankCost

LimitedBy = Literal["budget", "queue", "deadline"]
RESERVE_SHARE = 0.05  # of the budget, kept for what follows the rerank (fusion, the response) and for error
RESERVE_MIN_S = 0.005


def reserve_s(budget_s: float) -> float:
    return max(RESERVE_MIN_S, RESERVE_SHARE * budget_s)


def rerank_depth(cost: RerankCost | None, planned: int, left_s: float,
                 minimum: int = 0) -> tuple[int, LimitedBy | None]:
    """The deepest prefix of the `planned` candidates whose rerank, after the work ahead, ends within
    `left_s` (but at least `minimum`), and why it is shallower than planned (None: it is not)."""
    if cost is None:
        return planned, None

    def ends(d: int) -> float:  # a prefix of cached pairs never waits for the queue
        return cost.ahead_s + cost.prefix_s[d] if cost.prefix_s[d] else 0.0

    fits = max(d for d in range(planned + 1) if ends(d) <= left_s or d == 0)
    if fits >= planned or minimum >= planned:
        return planned, None
    alone = max(d for d in range(planned + 1) if cost.prefix_s[d] <= left_s or d == 0)
    return max(fits, minimum), "queue" if alone > fits else "budget"
