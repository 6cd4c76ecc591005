"""The collection layout, over Qdrant Edge (embedded, the default) or a Qdrant server (by URL).

Both backends store the same thing, so a corpus can move from one to the other unchanged:

- point id: ``point_id(doc_id)``, a UUIDv5 of the document id, so re-indexing overwrites (idempotent upserts);
- payload: ``{"doc_id", "title", "text", "metadata"}``, with a keyword index on ``doc_id``;
- vectors: ``"dense"`` (Cosine, the encoder's dimension) and ``"bm25"`` (sparse, IDF modifier). The BM25
  vectors come from Qdrant Edge's own ``Bm25`` for both backends, so both index identical sparse vectors;
- per-collection ``info`` (e.g. ``{"model": ..., "preset": ...}``): Edge keeps it in
  ``{data_dir}/collections/{name}/reprank.json`` beside the shard, the server in the collection's metadata.

Filter language (``filter=`` of ``query``): a dict mapping a field of the document's ``metadata`` to a
condition; all conditions must hold.

- ``{"section": "python"}``            the field equals this value (str, int or bool);
- ``{"section": ["python", "libs"]}``  the field equals any of these (a non-empty list of str, or of int);
- ``{"size": {"gte": 10, "lt": 100}}`` a numeric range, keys among gt, gte, lt, lte.

Dotted keys (``"source.year"``) reach into nested metadata. Anything else raises ``ValueError``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import grpc
import numpy as np
import qdrant_edge as edge
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from indexer.corpus import Document
from indexer.qdrant_config import INDEX_TYPES, ServerConfig

DENSE = "dense"
SPARSE = "bm25"
RRF_K = 2  # Qdrant's default RRF constant, spelled out so both backends fuse alike
IDENTITY_KEYS = ("model", "preset", "revision")  # info keys that must match to add vectors to a collection
POINT_NAMESPACE = uuid.UUID("2776c5d0-7d4e-53f3-8a23-411ef72ceccc")  # never change: ids would change
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELD_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_RANGE_KEYS = {"gt", "gte", "lt", "lte"}
_SERVER_BATCH = 128  # points per request: a 4096-d vector is ~80 KB of JSON, the REST limit is 32 MB
_ID_BATCH = 1024


@dataclass
class Hit:
    doc_id: str
    score: float
    payload: dict  # {"doc_id", "title", "text", "metadata"}


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
    def create_collection(self, name: str, dim: int, info: dict) -> None: ...
    def collection_info(self, name: str) -> dict: ...
    def check_info(self, name: str, info: dict) -> None: ...
    def list_collections(self) -> list[str]: ...
    def upsert(self, name: str, docs: Sequence[Document], vectors: np.ndarray) -> None: ...
    def existing_doc_ids(self, name: str, doc_ids: Sequence[str]) -> set[str]: ...
    def count(self, name: str) -> int: ...
    def query(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        filter: dict | None = None,
        *,
        hybrid_text: str | None = None,
    ) -> list[Hit]: ...
    def query_bm25(self, name: str, text: str, limit: int, filter: dict | None = None) -> list[Hit]: ...
    def optimize(self, name: str) -> bool: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def open_store(
    data_dir: str | Path, qdrant_url: str | None = None, api_key: str | None = None,
    server: ServerConfig | None = None,
) -> VectorStore:
    """A Qdrant server store when a URL is given, else the embedded Edge store under ``data_dir``."""
    if qdrant_url:
        return ServerStore(qdrant_url, api_key=api_key, config=server)
    return EdgeStore(data_dir)


# ---------------------------------------------------------------------------------------------------------
# Shared helpers: ids, names, payload, vectors, filters


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


class Cond(NamedTuple):
    """One parsed filter condition, independent of the backend: kind is "value", "any" or "range"."""

    key: str  # payload key, "metadata.<field>"
    kind: str
    value: Any


def parse_filter(filter: dict | None) -> list[Cond]:
    """Validate the filter language (module docstring) into backend-neutral conditions."""
    if not filter:
        return []
    if not isinstance(filter, dict):  # ValueError like every other filter error: the service answers 422
        raise ValueError(f"filter must map metadata fields to conditions, not {filter!r}")  # noqa: TRY004
    conds = []
    for name, cond in filter.items():
        if not isinstance(name, str) or not _FIELD_RE.match(name):
            raise ValueError(f"invalid filter field {name!r}: use letters, digits, '_' and '.' for nesting")
        key = f"metadata.{name}"
        if _is_match_scalar(cond):
            conds.append(Cond(key, "value", cond))
        elif isinstance(cond, list):
            if not cond or not (all(isinstance(v, str) for v in cond) or all(_is_int(v) for v in cond)):
                raise ValueError(f"filter {name!r}: a list must be non-empty and all strings or all integers")
            conds.append(Cond(key, "any", list(cond)))
        elif isinstance(cond, dict):
            if not cond or not set(cond) <= _RANGE_KEYS or not all(_is_number(v) for v in cond.values()):
                raise ValueError(
                    f"filter {name!r}: a range is an object of numbers with keys among gt, gte, lt, lte"
                )
            conds.append(Cond(key, "range", {k: float(v) for k, v in cond.items()}))
        else:
            raise ValueError(
                f"filter {name!r}: expected a string, integer or boolean, a list of them, "
                f"or a range, got {cond!r}"
                + (" (use a range to compare floats)" if isinstance(cond, float) else "")
            )
    return conds


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_match_scalar(v: Any) -> bool:
    return isinstance(v, str | bool) or _is_int(v)


def _payload(doc: Document) -> dict:
    return {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text, "metadata": doc.metadata}


@functools.cache
def _bm25() -> edge.Bm25:
    """One stateless BM25 model (tokenizer + weights); its config is part of the layout: keep it fixed."""
    return edge.Bm25(edge.Bm25Config(language="english"))


def _doc_sparse(doc: Document) -> edge.SparseVector:
    return _bm25().embed_document(f"{doc.title}\n{doc.text}" if doc.title else doc.text)


def _matrix(name: str, docs: Sequence[Document], vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(docs):
        raise ValueError(f"expected {len(docs)} vectors as a 2-d array, got shape {vectors.shape}")
    _check_dim(name, vectors.shape[1], dim)
    return vectors


def _query_vector(name: str, vector: np.ndarray, dim: int) -> list[float]:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    _check_dim(name, vector.shape[0], dim)
    return vector.tolist()


def _check_dim(name: str, got: int, dim: int) -> None:
    if got != dim:
        raise StoreMismatch(f"collection {name!r} holds {dim}-d vectors, got {got}-d: wrong model for it?")


def _check_compatible(name: str, have_dim: int, have_info: dict, dim: int, info: dict) -> None:
    """Called when a collection exists already: adding vectors of another space would corrupt it."""
    if have_dim != dim:
        raise StoreMismatch(
            f"collection {name!r} exists with {have_dim}-d vectors, not {dim}-d: "
            "use another collection name or delete the old one"
        )
    _check_identity(name, have_info, info, "use another collection name or delete the old one")


def _check_identity(name: str, have_info: dict, info: dict, remedy: str) -> None:
    """Keys of IDENTITY_KEYS that both sides know must agree (collections made before a key existed pass)."""
    for key in IDENTITY_KEYS:
        if key in info and key in have_info and info[key] != have_info[key]:
            raise StoreMismatch(
                f"collection {name!r} was built with {key} {have_info[key]!r}, not {info[key]!r}: {remedy}"
            )


SEARCH_REMEDY = "re-index it with this model (into a new collection), or serve the model that built it"


def _hits(points: Sequence[Any]) -> list[Hit]:
    return [Hit(doc_id=p.payload["doc_id"], score=float(p.score), payload=p.payload) for p in points]


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_limit(limit: int) -> None:
    if not _is_int(limit) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")


# ---------------------------------------------------------------------------------------------------------
# Qdrant Edge


def _edge_filter(conds: list[Cond]) -> edge.Filter | None:
    if not conds:
        return None
    out = []
    for c in conds:
        if c.kind == "range":
            out.append(edge.FieldCondition(c.key, range=edge.RangeFloat(**c.value)))
        else:
            match = edge.MatchValue(c.value) if c.kind == "value" else edge.MatchAny(c.value)
            out.append(edge.FieldCondition(c.key, match=match))
    return edge.Filter(must=out)


class EdgeStore:
    """Embedded Qdrant Edge: one shard per collection under ``{data_dir}/collections/{name}/shard``.

    Edge lets one process open a shard (its WAL is file-locked), holds the GIL during calls and is not
    documented as thread safe, so shards are opened lazily, cached, and every call runs under one lock.
    An upsert survives the process being killed once it returns (Edge appends to its WAL first), so no
    flush is needed per batch; ``close()`` (or ``flush()``) persists the segments themselves.
    """

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir) / "collections"
        self._lock = threading.RLock()
        self._open: dict[str, tuple[edge.EdgeShard, dict]] = {}  # name -> (shard, {"dim", "info"})

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def _read_meta(self, name: str) -> dict | None:
        try:
            return json.loads((self._dir(name) / "reprank.json").read_text())
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        """Edge raises bare ``Exception``s; give them our types (a held WAL lock reads "WouldBlock")."""
        try:
            yield
        except Exception as e:
            if type(e) is not Exception:
                raise
            shard_dir = self._dir(name) / "shard"
            if "WouldBlock" in str(e):
                raise StoreLocked(
                    f"the embedded collection folder {shard_dir} is in use by another process "
                    "(a Qdrant Edge shard can be open in one process, and one store, at a time): "
                    "stop the other process, or run a Qdrant server and pass --qdrant-url"
                ) from e
            raise StoreError(f"Qdrant Edge failed on {shard_dir}: {e}") from e

    def _shard(self, name: str) -> tuple[edge.EdgeShard, dict]:
        if name not in self._open:
            meta = self._read_meta(name)
            if meta is None:
                raise CollectionNotFound(f"collection {name!r} not found in {self.root}")
            with self._errors(name):
                self._open[name] = (edge.EdgeShard.load(str(self._dir(name) / "shard")), meta)
        return self._open[name]

    def create_collection(self, name: str, dim: int, info: dict) -> None:
        with self._lock:
            meta = self._read_meta(name)
            if meta is not None:
                _check_compatible(name, meta["dim"], meta["info"], dim, info)
                return
            config = edge.EdgeConfig(
                vectors={DENSE: edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine)},
                sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
            )
            shard_dir = self._dir(name) / "shard"
            shard_dir.mkdir(parents=True, exist_ok=True)
            with self._errors(name):
                # A shard without reprank.json is a creation cut short: reopen it rather than fail.
                if any(shard_dir.iterdir()):
                    shard = edge.EdgeShard.load(str(shard_dir), config)
                else:
                    shard = edge.EdgeShard.create(str(shard_dir), config)
                shard.update(
                    edge.UpdateOperation.create_field_index("doc_id", edge.PayloadSchemaType.Keyword)
                )
            meta = {"dim": dim, "info": info}
            tmp = self._dir(name) / "reprank.json.tmp"
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, self._dir(name) / "reprank.json")  # written last: marks the collection complete
            self._open[name] = (shard, meta)

    def collection_info(self, name: str) -> dict:
        with self._lock:
            _, meta = self._shard(name)
            return {"name": name, "dim": meta["dim"], "count": self.count(name), "info": meta["info"]}

    def check_info(self, name: str, info: dict) -> None:
        """StoreMismatch when `info` (the querying model's identity) differs from the collection's."""
        with self._lock:
            _, meta = self._shard(name)
        _check_identity(name, meta["info"], info, SEARCH_REMEDY)

    def list_collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "reprank.json").is_file())

    def upsert(self, name: str, docs: Sequence[Document], vectors: np.ndarray) -> None:
        with self._lock:
            shard, meta = self._shard(name)
            vectors = _matrix(name, docs, vectors, meta["dim"])
            points = [
                edge.Point(point_id(d.doc_id), {DENSE: v, SPARSE: _doc_sparse(d)}, _payload(d))
                for d, v in zip(docs, vectors, strict=True)
            ]
            if points:
                with self._errors(name):
                    shard.update(edge.UpdateOperation.upsert_points(points))

    def existing_doc_ids(self, name: str, doc_ids: Sequence[str]) -> set[str]:
        with self._lock:
            shard, _ = self._shard(name)
            by_id = {point_id(d): d for d in doc_ids}
            found = set()
            for ids in _chunks(list(by_id), _ID_BATCH):
                with self._errors(name):
                    found.update(by_id[str(r.id)] for r in shard.retrieve(ids, False, False))
            return found

    def count(self, name: str) -> int:
        with self._lock:
            shard, _ = self._shard(name)
            with self._errors(name):
                return shard.count(edge.CountRequest(exact=True))

    def query(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        filter: dict | None = None,
        *,
        hybrid_text: str | None = None,
    ) -> list[Hit]:
        _check_limit(limit)
        flt = _edge_filter(parse_filter(filter))
        with self._lock:
            shard, meta = self._shard(name)
            dense = edge.Query.Nearest(_query_vector(name, vector, meta["dim"]), using=DENSE)
            sparse = _bm25().embed_query(hybrid_text) if hybrid_text else None
            if sparse is not None and len(sparse.indices):
                request = edge.QueryRequest(
                    limit=limit,
                    prefetches=[
                        edge.Prefetch(limit=limit, query=dense, filter=flt),
                        edge.Prefetch(
                            limit=limit, query=edge.Query.Nearest(sparse, using=SPARSE), filter=flt
                        ),
                    ],
                    query=edge.Fusion.Rrf(k=RRF_K),
                    filter=flt,
                    with_payload=True,
                )
            else:  # no hybrid text, or no BM25 term in it (only stopwords): dense alone
                request = edge.QueryRequest(limit=limit, query=dense, filter=flt, with_payload=True)
            with self._errors(name):
                return _hits(shard.query(request))

    def query_bm25(self, name: str, text: str, limit: int, filter: dict | None = None) -> list[Hit]:
        """BM25 alone over the stored sparse vectors: the lexical baseline of `reprank eval`."""
        _check_limit(limit)
        flt = _edge_filter(parse_filter(filter))
        with self._lock:
            shard, _ = self._shard(name)
            sparse = _bm25().embed_query(text)
            if not len(sparse.indices):  # only stopwords: nothing can match
                return []
            request = edge.QueryRequest(
                limit=limit, query=edge.Query.Nearest(sparse, using=SPARSE), filter=flt, with_payload=True
            )
            with self._errors(name):
                return _hits(shard.query(request))

    def optimize(self, name: str) -> bool:
        """Build the HNSW index where segments are big enough (small shards stay brute force)."""
        with self._lock:
            shard, _ = self._shard(name)
            with self._errors(name):
                return shard.optimize()

    def flush(self) -> None:
        with self._lock:
            for name, (shard, _) in self._open.items():
                with self._errors(name):
                    shard.flush()

    def close(self) -> None:
        """Flush and release every open shard (and its lock); the store reopens them on next use."""
        with self._lock:
            for name, (shard, _) in list(self._open.items()):
                with self._errors(name):
                    shard.close()
                del self._open[name]


# ---------------------------------------------------------------------------------------------------------
# Qdrant server


def _server_filter(conds: list[Cond]) -> qm.Filter | None:
    if not conds:
        return None
    out = []
    for c in conds:
        if c.kind == "range":
            out.append(qm.FieldCondition(key=c.key, range=qm.Range(**c.value)))
        else:
            match = qm.MatchValue(value=c.value) if c.kind == "value" else qm.MatchAny(any=c.value)
            out.append(qm.FieldCondition(key=c.key, match=match))
    return qm.Filter(must=out)


def _server_sparse(v: edge.SparseVector) -> qm.SparseVector:
    return qm.SparseVector(indices=list(v.indices), values=list(v.values))


class ServerStore:
    """A Qdrant server (or cluster) through qdrant-client; ``location=":memory:"`` gives its test double.

    The collection's ``info`` lives in Qdrant's collection metadata (server 1.16+), its dimension in the
    vectors config. ``config`` sets HNSW, quantization, on-disk vectors, sharding and payload indexes
    for new collections, and the search params of queries. Any name may be an alias (the server
    resolves it), which is how `reprank index` swaps in a rebuilt collection (indexer/reindex.py).
    Extra keyword arguments go to ``QdrantClient`` (e.g. ``prefer_grpc=True``, ``timeout``).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        location: str | None = None,
        config: ServerConfig | None = None,
        **client_options: Any,
    ):
        if (url is None) == (location is None):
            raise ValueError("give exactly one of url or location")
        self.where = url or location
        self.config = config or ServerConfig()
        self._search = self.config.search_params()
        if url is not None:
            self._client = QdrantClient(url=url, api_key=api_key, **client_options)
        else:
            self._client = QdrantClient(location=location, **client_options)
        self._described: dict[str, tuple[int, dict]] = {}  # name -> (dense dimension, info), read once per name

    @contextlib.contextmanager
    def _errors(self, name: str | None = None) -> Iterator[None]:
        """Map transport and HTTP/gRPC errors of qdrant-client onto the store's errors."""
        try:
            yield
        except UnexpectedResponse as e:
            if e.status_code == 404 and name is not None:
                raise CollectionNotFound(f"collection {name!r} not found on Qdrant at {self.where}") from e
            if e.status_code in (502, 503, 504):
                raise StoreUnavailable(f"Qdrant at {self.where} is unavailable ({e.status_code})") from e
            raise StoreError(f"Qdrant at {self.where} answered {e.status_code}: {e.content[:500]!r}") from e
        except ResponseHandlingException as e:  # wraps httpx connect/read errors and timeouts
            raise StoreUnavailable(f"cannot reach Qdrant at {self.where}: {e.source!r}") from e
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND and name is not None:
                raise CollectionNotFound(f"collection {name!r} not found on Qdrant at {self.where}") from e
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise StoreUnavailable(f"cannot reach Qdrant at {self.where} over gRPC: {code.name}") from e
            raise StoreError(f"Qdrant at {self.where} failed over gRPC: {e}") from e
        except ValueError as e:  # local (":memory:") mode reports a missing collection this way
            if name is not None and str(e) == f"Collection {name} not found":
                raise CollectionNotFound(f"collection {name!r} not found on Qdrant at {self.where}") from e
            raise

    def _describe(self, name: str) -> tuple[int, dict]:
        with self._errors(check_name(name)):
            config = self._client.get_collection(name).config
        vectors = config.params.vectors
        if not isinstance(vectors, dict) or DENSE not in vectors:
            raise StoreMismatch(
                f"collection {name!r} on {self.where} has no {DENSE!r} vector: not made by reprank"
            )
        self._described[name] = vectors[DENSE].size, dict(config.metadata or {})
        return self._described[name]

    def _dim(self, name: str) -> int:
        return (self._described.get(name) or self._describe(name))[0]

    def create_collection(self, name: str, dim: int, info: dict) -> None:
        with self._errors(check_name(name)):
            exists = self._client.collection_exists(name)
        if exists:
            _check_compatible(name, *self._describe(name), dim, info)
            return
        c = self.config
        with self._errors(name):
            self._client.create_collection(
                name,
                vectors_config={DENSE: c.vector_params(dim)},
                sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                metadata=info,
                **c.cluster(),
            )
            # payload indexes before the first upsert, so the HNSW graph gets their filter links
            indexes = [("doc_id", "keyword")] + [(f"metadata.{f}", t) for f, t in c.payload_indexes]
            for field_name, kind in indexes:
                self._client.create_payload_index(name, field_name, INDEX_TYPES[kind], wait=True)
        self._described[name] = dim, info

    # Aliases: a stable name over versioned collections, moved atomically

    def alias_target(self, alias: str) -> str | None:
        with self._errors():
            found = [a.collection_name for a in self._client.get_aliases().aliases if a.alias_name == alias]
        return found[0] if found else None

    def point_alias(self, alias: str, collection: str) -> None:
        """Move (or create) ``alias`` to ``collection`` in one request: readers never see it missing."""
        ops: list = []
        if self.alias_target(check_name(alias)) is not None:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
        ops.append(qm.CreateAliasOperation(
            create_alias=qm.CreateAlias(collection_name=check_name(collection), alias_name=alias)))
        with self._errors(collection):
            self._client.update_collection_aliases(change_aliases_operations=ops)
        self._described.pop(alias, None)

    def delete_collection(self, name: str) -> None:
        with self._errors(check_name(name)):
            self._client.delete_collection(name)
        self._described.pop(name, None)

    def collection_info(self, name: str) -> dict:
        dim, info = self._describe(name)
        return {"name": name, "dim": dim, "count": self.count(name), "info": info}

    def check_info(self, name: str, info: dict) -> None:
        """As EdgeStore.check_info; the collection's info is read once per name, like its dimension."""
        have = (self._described.get(name) or self._describe(name))[1]
        _check_identity(name, have, info, SEARCH_REMEDY)

    def list_collections(self) -> list[str]:
        with self._errors():
            return sorted(c.name for c in self._client.get_collections().collections)

    def upsert(self, name: str, docs: Sequence[Document], vectors: np.ndarray) -> None:
        vectors = _matrix(name, docs, vectors, self._dim(check_name(name)))
        points = [
            qm.PointStruct(
                id=point_id(d.doc_id),
                vector={DENSE: v.tolist(), SPARSE: _server_sparse(_doc_sparse(d))},
                payload=_payload(d),
            )
            for d, v in zip(docs, vectors, strict=True)
        ]
        for batch in _chunks(points, _SERVER_BATCH):
            with self._errors(name):
                self._client.upsert(name, points=list(batch), wait=True)

    def existing_doc_ids(self, name: str, doc_ids: Sequence[str]) -> set[str]:
        check_name(name)
        by_id = {point_id(d): d for d in doc_ids}
        found = set()
        for ids in _chunks(list(by_id), _ID_BATCH):
            with self._errors(name):
                records = self._client.retrieve(name, ids=list(ids), with_payload=False, with_vectors=False)
            found.update(by_id[str(r.id)] for r in records)
        return found

    def count(self, name: str) -> int:
        with self._errors(check_name(name)):
            return self._client.count(name, exact=True).count

    def query(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        filter: dict | None = None,
        *,
        hybrid_text: str | None = None,
    ) -> list[Hit]:
        _check_limit(limit)
        flt = _server_filter(parse_filter(filter))
        dense = _query_vector(name, vector, self._dim(check_name(name)))
        sparse = _bm25().embed_query(hybrid_text) if hybrid_text else None
        with self._errors(name):
            if sparse is not None and len(sparse.indices):
                response = self._client.query_points(
                    name,
                    prefetch=[
                        qm.Prefetch(query=dense, using=DENSE, limit=limit, filter=flt, params=self._search),
                        qm.Prefetch(query=_server_sparse(sparse), using=SPARSE, limit=limit, filter=flt),
                    ],
                    query=qm.RrfQuery(rrf=qm.Rrf(k=RRF_K)),
                    query_filter=flt,
                    limit=limit,
                    with_payload=True,
                )
            else:  # no hybrid text, or no BM25 term in it (only stopwords): dense alone
                response = self._client.query_points(
                    name, query=dense, using=DENSE, query_filter=flt, limit=limit, with_payload=True,
                    search_params=self._search,
                )
        return _hits(response.points)

    def query_bm25(self, name: str, text: str, limit: int, filter: dict | None = None) -> list[Hit]:
        """BM25 alone over the stored sparse vectors: the lexical baseline of `reprank eval`."""
        _check_limit(limit)
        flt = _server_filter(parse_filter(filter))
        self._dim(check_name(name))  # a missing collection fails the same way as for any query
        sparse = _bm25().embed_query(text)
        if not len(sparse.indices):
            return []
        with self._errors(name):
            response = self._client.query_points(
                name, query=_server_sparse(sparse), using=SPARSE, query_filter=flt, limit=limit, with_payload=True
            )
        return _hits(response.points)

    def optimize(self, name: str) -> bool:
        """Nothing to do: the server optimizes and indexes in the background."""
        return False

    def flush(self) -> None:
        """Nothing to do: upserts wait for the server's WAL (``wait=True``)."""

    def close(self) -> None:
        self._client.close()
