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


@dataclass
class Scored:
    scores: list[float]  # one per document, in the order given, on the reranker's own scale (decides the order)
    tokens: int
    truncated_tokens: int
    relevance: list[float] | None = None  # the same order in [0, 1] (a logit's sigmoid); None: scores are already

    def __post_init__(self) -> None:
        if self.relevance is None:
            self.relevance = list(self.scores)


class TextEncoder(Protocol):
    async def embed(self, texts: list[str], side: Side, truncate: bool) -> Encoded:
        """Raises InputTooLong (an input over the max length, truncate off) or QueueFull (overload)."""
        ...

    async def aclose(self) -> None: ...


class PairScorer(Protocol):
    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        """One relevance score per document; raises InputTooLong or QueueFull like TextEncoder.embed."""
        ...

    async def aclose(self) -> None: ...
