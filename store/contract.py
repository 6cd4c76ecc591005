"""The store's contract: what a backend offers (``VectorStore``), what a query returns, what fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from store.documents import Document, Passage


@dataclass
class Hit:
    """One stored passage that matched (a whole document, unless the indexer split it)."""

    doc_id: str
    score: float
    payload: dict  # {"doc_id", "title", "text", "metadata", "passage", "span", "version"} (store.layout)

    @property
    def document(self) -> Document:
        """The passage as the models read it: its text, with the document's title and metadata."""
        p = self.payload
        return Document(self.doc_id, p.get("text", ""), p.get("title", ""), p.get("metadata") or {})

    @property
    def passage(self) -> int:
        return int(self.payload.get("passage") or 0)  # collections from before passages: 0

    @property
    def span(self) -> tuple[int, int]:
        span = self.payload.get("span")
        return (span[0], span[1]) if span else (0, len(self.payload.get("text", "")))

    @property
    def key(self) -> tuple[str, int]:
        return self.doc_id, self.passage


class StoreError(Exception):
    """Base of the store's errors."""


class CollectionNotFound(StoreError):
    """The collection does not exist (the service answers 404)."""


class StoreLocked(StoreError):
    """An embedded collection is open in another process (Edge allows one process per shard)."""


class StoreUnavailable(StoreError):
    """The Qdrant server cannot be reached (the service answers 503)."""


class StoreMismatch(StoreError):
    """The collection exists with another dimension or model than the caller's."""


class VectorStore(Protocol):
    """Both backends (store.edge, store.server) hold the same layout (store.layout) and answer alike.

    Queries return hits best first, equal scores ordered by document id, so a ranking is the same
    on every run over the same collection. A store is a context manager: leaving it closes it.
    """

    def create_collection(self, name: str, dim: int, info: dict) -> bool:
        """Create it, or check an existing one is compatible (StoreMismatch if not); True if created."""
    def collection_info(self, name: str) -> dict: ...
    def check_info(self, name: str, info: dict) -> None: ...
    def list_collections(self) -> list[str]: ...
    def upsert(self, name: str, docs: Sequence[Document | Passage], vectors: np.ndarray) -> None:
        """Replace each named document by these passages (all of its passages, 0..n-1; a Document is
        one), each document wholly old or wholly new to any reader and after a kill (store.layout)."""
    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> int:
        """Remove every passage of these documents; returns how many of them existed."""
    def existing_doc_ids(self, name: str, doc_ids: Sequence[str]) -> set[str]: ...
    def count(self, name: str) -> int:
        """Documents (committed first passages)."""
    def count_passages(self, name: str) -> int:
        """Stored points: passages, including those of a write cut short until that document is written again."""
    def query(self, name: str, vector: np.ndarray, limit: int, filter: dict | None = None, *,
              hybrid_text: str | None = None) -> list[Hit]: ...
    def query_bm25(self, name: str, text: str, limit: int, filter: dict | None = None) -> list[Hit]: ...
    def optimize(self, name: str) -> bool: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> VectorStore: ...
    def __exit__(self, *exc) -> None: ...


class Closing:
    """``with store:`` closes it on the way out, however the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
