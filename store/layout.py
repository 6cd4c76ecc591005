"""The collection layout both backends write, so a corpus can move from one to the other unchanged:

- points are passages: a document is one point, or, when the indexer split a long one, one per window
  (store.documents.Passage). Passage 0's id is ``point_id(doc_id)``, a UUIDv5 of the document id, so
  re-indexing overwrites; it is the document's commit record. Later passages' ids also name the write's
  ``version``, so a new version never overwrites the old one's passages (see ``write_plan``);
- payload: ``{"doc_id", "title", "text", "metadata", "passage", "span", "version"}`` (``text`` is the
  passage's, ``span`` its characters in the document's text), with a keyword index on ``doc_id``;
- vectors: ``"dense"`` (Cosine, the encoder's dimension) and ``"bm25"`` (sparse, IDF modifier). The BM25
  vectors come from Qdrant Edge's own ``Bm25`` for both backends, so both index identical sparse vectors;
- per-collection ``info`` (e.g. ``{"model": ..., "preset": ..., "revision": ...}``): Edge keeps it in
  ``{data_dir}/collections/{name}/reprank.json`` beside the shard, the server in the collection's metadata.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import qdrant_edge as edge

from store.contract import Hit, StoreMismatch
from store.documents import Document, Passage, whole
from store.filters import is_int

DENSE = "dense"
SPARSE = "bm25"
IDENTITY_KEYS = ("model", "preset", "revision")  # info keys that must match to add vectors to a collection
POINT_NAMESPACE = uuid.UUID("2776c5d0-7d4e-53f3-8a23-411ef72ceccc")  # never change: ids would change
SEARCH_REMEDY = "re-index it with this model (into a new collection), or serve the model that built it"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def point_id(doc_id: str, passage: int = 0, version: int = 0) -> str:
    """Deterministic point id: a document's first passage by its id alone (upserting it again overwrites
    it), each later passage by its index and the write's version as well."""
    return str(uuid.uuid5(POINT_NAMESPACE, doc_id if passage == 0 else f"{doc_id}\0{passage}\0{version}"))


@dataclass
class WritePlan:
    """How a batch replaces documents so that a reader, or a restart after a kill at any point, sees each
    document wholly old or wholly new: first the new passages after the first (fresh ids: invisible while
    the first passage still names the old version), then every first passage (one point each: the
    commit), then the delete of the documents' points of any other version."""

    version: int
    rest: list[tuple[Passage, np.ndarray]]
    commits: list[tuple[Passage, np.ndarray]]
    doc_ids: list[str]


def write_plan(name: str, items: Sequence[Document | Passage], vectors: np.ndarray, dim: int) -> WritePlan:
    passages = [whole(p) for p in items]
    vectors = matrix(name, passages, vectors, dim)
    indices: dict[str, list[int]] = {}
    for p in passages:
        indices.setdefault(p.doc.doc_id, []).append(p.index)
    for doc_id, seen in indices.items():
        if sorted(seen) != list(range(len(seen))):
            raise ValueError(f"document {doc_id!r}: passages {sorted(seen)} are not 0..{len(seen) - 1} (each once)")
    pairs = list(zip(passages, vectors, strict=True))
    return WritePlan(time.time_ns(), [x for x in pairs if x[0].index], [x for x in pairs if not x[0].index],
                     list(indices))


def passage_point_id(p: Passage, version: int) -> str:
    return point_id(p.doc.doc_id, p.index, version)


def check_name(name: str) -> str:
    """Collection names are folder names for Edge: keep them plain so they cannot escape the data dir."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def payload(p: Passage, version: int) -> dict:
    d = p.doc
    return {"doc_id": d.doc_id, "title": d.title, "text": d.text, "metadata": d.metadata, "passage": p.index,
            "span": list(p.span), "version": version}


def committed_only(hits: list[Hit], versions: dict[str, int | None]) -> list[Hit]:
    """The hits less later passages whose version is not their document's committed one (passage 0's):
    left by a write that was cut short, or not yet committed, or replaced and not yet deleted. (By
    version, not by key: an uncommitted passage shares its index with the committed one it would replace.)"""
    return [h for h in hits if not h.passage or versions.get(h.doc_id) == h.payload.get("version")]


@functools.cache
def _bm25() -> edge.Bm25:
    """One stateless BM25 model (tokenizer + weights); its config is part of the layout: keep it fixed."""
    return edge.Bm25(edge.Bm25Config(language="english"))


def doc_sparse(p: Passage) -> edge.SparseVector:
    doc = p.doc
    return _bm25().embed_document(f"{doc.title}\n{doc.text}" if doc.title else doc.text)


def query_sparse(text: str | None) -> edge.SparseVector | None:
    """The BM25 query vector, or None when the text has no BM25 term (empty, or only stopwords)."""
    if not text:
        return None
    sparse = _bm25().embed_query(text)
    return sparse if len(sparse.indices) else None


def matrix(name: str, docs: Sequence, vectors: np.ndarray, dim: int) -> np.ndarray:
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


def now() -> str:
    """UTC time of a collection's creation or last write, ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_limit(limit: int) -> None:
    if not is_int(limit) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
