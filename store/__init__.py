"""The collection layout over Qdrant: the embedded Edge engine by default, a server or cluster by URL.

Knows no model: it stores documents with the vectors it is given and answers queries by vector
and text. ``contract`` (the ``VectorStore`` protocol, hits, errors), ``layout`` (ids, payload,
vectors), ``filters``, ``fusion`` (hybrid RRF), one module per backend, ``config``.
"""

from __future__ import annotations

from store.config import ServerConfig, StoreConfig
from store.contract import (
    CollectionNotFound,
    Hit,
    StoreError,
    StoreLocked,
    StoreMismatch,
    StoreUnavailable,
    VectorStore,
)
from store.documents import Document, passage_text

__all__ = ["CollectionNotFound", "Document", "Hit", "ServerConfig", "StoreConfig", "StoreError", "StoreLocked",
           "StoreMismatch", "StoreUnavailable", "VectorStore", "open_store", "passage_text"]


def open_store(config: StoreConfig) -> VectorStore:
    """The one way every command and the service open a store: a Qdrant server when a URL is
    given (``:memory:``: qdrant-client's local mode in this process, for tests and trials), else the
    embedded Edge store under ``data_dir``."""
    if config.url:
        from store.server import ServerStore

        if config.url == ":memory:":
            return ServerStore(location=":memory:", config=config.server)
        return ServerStore(config.url, api_key=config.api_key, config=config.server)
    from store.edge import EdgeStore

    return EdgeStore(config.data_dir)
