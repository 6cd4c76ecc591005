"""The collection layout both backends write, so a corpus can move from one to the other unchanged:

- point id: ``point_id(doc_id)``, a UUIDv5 of the document id, so re-indexing overwrites (idempotent upserts);
- payload: ``{"doc_id", "title", "text", "metadata"}``, with a keyword index on ``doc_id``;
- vectors: ``"dense"`` (Cosine, the encoder's dimension) and ``"bm25"`` (sparse, IDF modifier). The BM25
  vectors come from Qdrant Edge's own ``Bm25`` for both backends, so both index identical sparse vectors;
- per-collection ``info`` (e.g. ``{"model": ..., "preset": ..., "revision": ...}``): Edge keeps it in
  ``{data_dir}/collections/{name}/reprank.json`` beside the shard, the server in the collection's metadata.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator, Sequence

import numpy as np
import qdrant_edge as edge

from store.contract import StoreMismatch
from store.documents import Document
from store.filters import is_int

DENSE = "dense"
SPARSE = "bm25"
IDENTITY_KEYS = ("model", "preset", "revision")  # info keys that must match to add vectors to a collection
POINT_NAMESPACE = uuid.UUID("2776c5d0-7d4e-53f3-8a23-411ef72ceccc")  # never change: ids would change
SEARCH_REMEDY = "re-index it with this model (into a new collection), or serve the model that built it"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def point_id(doc_id: str) -> str:
    """Deterministic point id of a document, so upserting it again overwrites instead of duplicating."""
    return str(uuid.uuid5(POINT_NAMESPACE, doc_id))


def check_name(name: str) -> str:
    """Collection names are folder names for Edge: keep them plain so they cannot escape the data dir."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def payload(doc: Document) -> dict:
    return {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text, "metadata": doc.metadata}


@functools.cache
def _bm25() -> edge.Bm25:
    """One stateless BM25 model (tokenizer + weights); its config is part of the layout: keep it fixed."""
    return edge.Bm25(edge.Bm25Config(language="english"))


def doc_sparse(doc: Document) -> edge.SparseVector:
    return _bm25().embed_document(f"{doc.title}\n{doc.text}" if doc.title else doc.text)


def query_sparse(text: str | None) -> edge.SparseVector | None:
    """The BM25 query vector, or None when the text has no BM25 term (empty, or only stopwords)."""
    if not text:
        return None
    sparse = _bm25().embed_query(text)
    return sparse if len(sparse.indices) else None


def matrix(name: str, docs: Sequence[Document], vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(docs):
        raise ValueError(f"expected {len(docs)} vectors as a 2-d array, got shape {vectors.shape}")
    check_dim(name, vectors.shape[1], dim)
    return vectors


def query_vector(name: str, vector: np.ndarray, dim: int) -> list[float]:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    check_dim(name, vector.shape[0], dim)
    return vector.tolist()


def check_dim(name: str, got: int, dim: int) -> None:
    if got != dim:
        raise StoreMismatch(f"collection {name!r} holds {dim}-d vectors, got {got}-d: wrong model for it?")


def check_compatible(name: str, have_dim: int, have_info: dict, dim: int, info: dict) -> None:
    """Called when a collection exists already: adding vectors of another space would corrupt it."""
    if have_dim != dim:
        raise StoreMismatch(
            f"collection {name!r} exists with {have_dim}-d vectors, not {dim}-d: "
            "use another collection name or delete the old one"
        )
    check_identity(name, have_info, info, "use another collection name or delete the old one")


def check_identity(name: str, have_info: dict, info: dict, remedy: str = SEARCH_REMEDY) -> None:
    """Keys of IDENTITY_KEYS that both sides know must agree (collections made before a key existed pass)."""
    for key in IDENTITY_KEYS:
        if key in info and key in have_info and info[key] != have_info[key]:
            raise StoreMismatch(
                f"collection {name!r} was built with {key} {have_info[key]!r}, not {info[key]!r}: {remedy}"
            )


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_limit(limit: int) -> None:
    if not is_int(limit) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
