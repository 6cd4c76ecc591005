"""The store's contract: what a backend offers (``VectorStore``), what a query returns, what fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from store.documents import Document


@dataclass
class Hit:
    doc_id: str
    score: float
    payload: dict  # {"doc_id", "title", "text", "metadata"}

    @property
    def document(self) -> Document:
        p = self.payload
        return Document(self.doc_id, p.get("text", ""), p.get("title", ""), p.get("metadata") or {})


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

    def create_collection(self, name: str, dim: int, info: dict) -> None: ...
    def collection_info(self, name: str) -> dict: ...
    def check_info(self, name: str, info: dict) -> None: ...
    def list_collections(self) -> list[str]: ...
    def upsert(self, name: str, docs: Sequence[Document], vectors: np.ndarray) -> None: ...
    def existing_doc_ids(self, name: str, doc_ids: Sequence[str]) -> set[str]: ...
    def count(self, name: str) -> int: ...
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
