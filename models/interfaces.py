"""The seams above the model layer: what a text encoder and a pair scorer do, whatever runs them.

The torch engine (models.encoder, models.reranker) implements them in this process; the service's
remote models (service/remote.py) implement them over HTTP to reprank workers or vLLM servers.
The search core (search/core.py) and the service call only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Side = Literal["query", "passage"]


@dataclass
class Encoded:
    vectors: np.ndarray  # [n, dim] float32, L2-normalised when the preset says so
    tokens: int
    truncated_tokens: int
    item_tokens: list[int] | None = None  # per input, where the engine counts them (a cache keeps each item's)
    item_truncated: list[int] | None = None


@dataclass
class Scored:
    scores: list[float]  # one per document, in the order given, on the reranker's own scale (decides the order)
    tokens: int
    truncated_tokens: int
    relevance: list[float] | None = None  # the same order in [0, 1] (a logit's sigmoid); None: scores are already
    item_tokens: list[int] | None = None  # per document, where the engine counts them
    item_truncated: list[int] | None = None

    def __post_init__(self) -> None:
        if self.relevance is None:
            self.relevance = list(self.scores)


@dataclass
class RerankCost:
    ahead_s: float  # the work queued ahead of this request, at the measured rate
    prefix_s: list[float]  # [d]: seconds for the first d documents (d = 0..n); a cached one adds nothing


class TextEncoder(Protocol):
    async def embed(self, texts: list[str], side: Side, truncate: bool) -> Encoded:
        """Raises InputTooLong (an input over the max length, truncate off) or QueueFull (overload)."""
        ...

    async def aclose(self) -> None: ...


class PairScorer(Protocol):
    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        """One relevance score per document; raises InputTooLong or QueueFull like TextEncoder.embed."""
        ...

    async def cost(self, query: str, documents: list[str], truncate: bool) -> RerankCost | None:
        """What reranking each prefix of `documents` would take now, for a search's latency budget
        (search/budget.py); None where the scorer cannot tell (a remote one)."""
        ...

    async def aclose(self) -> None: ...
