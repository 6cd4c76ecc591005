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
    scores: list[float]  # one per document, in the order given
    tokens: int
    truncated_tokens: int


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
