"""A Qdrant server or cluster through qdrant-client (``location=":memory:"``: its local mode, for tests)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import qdrant_edge as edge
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from store.config import INDEX_TYPES, ServerConfig
from store.contract import Closing, CollectionNotFound, Hit, StoreError, StoreMismatch, StoreUnavailable
from store.documents import Document, Passage
from store.filters import Cond, parse_filter
from store.fusion import ranked, rrf
from store.layout import (
    DENSE,
    SPARSE,
    check_compatible,
    check_identity,
    check_limit,
    check_name,
    chunks,
    committed_only,
    doc_sparse,
    now,
    passage_point_id,
    payload,
    point_id,
    query_sparse,
    query_vector,
    write_plan,
)

_SERVER_BATCH = 128  # points per request: a 4096-d vector is ~80 KB of JSON, the REST limit is 32 MB
_ID_BATCH = 1024


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


class _OneAtATime:
    """qdrant-client's local mode keeps a collection in numpy arrays without locks: a search while the
    service's thread pool runs a write can see them mid-resize (a 500 found by the concurrency test).
    Local mode gets its calls one at a time; a real server handles concurrency itself."""

    def __init__(self, client: QdrantClient):
        self._client, self._lock = client, threading.RLock()

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return call


def _server_sparse(v: edge.SparseVector) -> qm.SparseVector:
    return qm.SparseVector(indices=list(v.indices), values=list(v.values))


class ServerStore(Closing):
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
            self._client = _OneAtATime(QdrantClient(location=location, **client_options))
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

    def create_collection(self, name: str, dim: int, info: dict) -> bool:
        with self._errors(check_name(name)):
            exists = self._client.collection_exists(name)
        if exists:
            check_compatible(name, *self._describe(name), dim, info)
            return False
        c = self.config
        with self._errors(name):
            self._client.create_collection(
                name,
                vectors_config={DENSE: c.vector_params(dim)},
                sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                metadata={**info, "created": now(), "updated": now()},
                **c.cluster(),
            )
            # payload indexes before the first upsert, so the HNSW graph gets their filter links
            indexes = [("doc_id", "keyword"), ("passage", "integer"), ("version", "integer")] + [(f"metadata.{f}", t) for f, t in c.payload_indexes]
            for field_name, kind in indexes:
                self._client.create_payload_index(name, field_name, INDEX_TYPES[kind], wait=True)
        self._described[name] = dim, info
        return True

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
        dim, meta = self._describe(name)
        info = {k: v for k, v in meta.items() if k not in ("created", "updated")}
        return {"name": name, "dim": dim, "count": self.count(name), "passages": self.count_passages(name),
                "info": info, "created": meta.get("created"), "updated": meta.get("updated")}

    def check_info(self, name: str, info: dict) -> None:
        """As EdgeStore.check_info; the collection's info is read once per name, like its dimension."""
        have = (self._described.get(name) or self._describe(name))[1]
        check_identity(name, have, info)

    def list_collections(self) -> list[str]:
        with self._errors():
            return sorted(c.name for c in self._client.get_collections().collections)

    def upsert(self, name: str, docs: Sequence[Document | Passage], vectors: np.ndarray) -> None:
        """store.layout.WritePlan's three steps, each request waiting for the server's WAL; a document's
        first passage is one point, so its commit is atomic whatever the batching."""
        plan = write_plan(name, docs, vectors, self._dim(check_name(name)))
        for part in (plan.rest, plan.commits):
            points = [qm.PointStruct(id=passage_point_id(p, plan.version), payload=payload(p, plan.version),
                                     vector={DENSE: v.tolist(), SPARSE: _server_sparse(doc_sparse(p))})
                      for p, v in part]
            for batch in chunks(points, _SERVER_BATCH):
                with self._errors(name):
                    self._client.upsert(name, points=list(batch), wait=True)
        if plan.doc_ids:
            self._delete(name, qm.Filter(
                must=[qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=plan.doc_ids))],
                must_not=[qm.FieldCondition(key="version", match=qm.MatchValue(value=plan.version))]))
        self._touch(name)

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> int:
        present = self.existing_doc_ids(name, doc_ids)
        if present:  # commit records first, so a kill midway leaves no half document
            with self._errors(name):
                self._client.delete(name, points_selector=[point_id(d) for d in present], wait=True)
        if doc_ids:
            self._delete(name, qm.Filter(must=[qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=list(doc_ids)))]))
        self._touch(name)
        return len(present)

    def _delete(self, name: str, flt: qm.Filter) -> None:
        with self._errors(name):
            self._client.delete(name, points_selector=qm.FilterSelector(filter=flt), wait=True)

    def _touch(self, name: str) -> None:
        """The collection's `updated` time, in its metadata beside the info."""
        with self._errors(name):
            self._client.update_collection(name, metadata={"updated": now()})

    def existing_doc_ids(self, name: str, doc_ids: Sequence[str]) -> set[str]:
        return set(self._committed(name, doc_ids))

    def _committed(self, name: str, doc_ids: Sequence[str]) -> dict[str, int | None]:
        """{doc_id: its committed version} of the documents that exist (first passages)."""
        check_name(name)
        by_id = {point_id(d): d for d in doc_ids}
        found: dict[str, int | None] = {}
        for ids in chunks(list(by_id), _ID_BATCH):
            with self._errors(name):
                records = self._client.retrieve(name, ids=list(ids), with_payload=["version"], with_vectors=False)
            found.update((by_id[str(r.id)], (r.payload or {}).get("version")) for r in records)
        return found

    def count(self, name: str) -> int:
        first = qm.Filter(must_not=[qm.FieldCondition(key="passage", range=qm.Range(gte=1))])
        with self._errors(check_name(name)):
            return self._client.count(name, count_filter=first, exact=True).count

    def count_passages(self, name: str) -> int:
        with self._errors(check_name(name)):
            return self._client.count(name, exact=True).count

    def query(self, name: str, vector: np.ndarray, limit: int, filter: dict | None = None, *,
              hybrid_text: str | None = None) -> list[Hit]:
        """Dense nearest neighbours; with ``hybrid_text``, fused with BM25 (store.fusion). Both lists
        come in one request (``query_batch_points``)."""
        check_limit(limit)
        flt = _server_filter(parse_filter(filter))
        dense = query_vector(name, vector, self._dim(check_name(name)))
        sparse = query_sparse(hybrid_text)
        requests = [qm.QueryRequest(query=dense, using=DENSE, filter=flt, limit=limit, with_payload=True,
                                    params=self._search)]
        if sparse is not None:  # no hybrid text, or no BM25 term in it (only stopwords): dense alone
            requests.append(qm.QueryRequest(query=_server_sparse(sparse), using=SPARSE, filter=flt, limit=limit,
                                            with_payload=True))
        lists = self._batch(name, requests)
        return lists[0] if sparse is None else rrf(lists, limit)

    def query_bm25(self, name: str, text: str, limit: int, filter: dict | None = None) -> list[Hit]:
        """BM25 alone over the stored sparse vectors: the lexical baseline of `reprank eval`."""
        check_limit(limit)
        flt = _server_filter(parse_filter(filter))
        self._dim(check_name(name))  # a missing collection fails the same way as for any query
        sparse = query_sparse(text)
        if sparse is None:
            return []
        return self._batch(name, [qm.QueryRequest(query=_server_sparse(sparse), using=SPARSE, filter=flt,
                                                  limit=limit, with_payload=True)])[0]

    def _batch(self, name: str, requests: list[qm.QueryRequest]) -> list[list[Hit]]:
        with self._errors(name):
            responses = self._client.query_batch_points(name, requests=requests)
        lists = [[Hit(p.payload["doc_id"], float(p.score), p.payload) for p in r.points] for r in responses]
        later = list({h.doc_id for hits in lists for h in hits if h.passage})
        if later:  # a later passage counts only in its document's committed version
            versions = self._committed(name, later)
            lists = [committed_only(hits, versions) for hits in lists]
        return [ranked(hits) for hits in lists]

    def optimize(self, name: str) -> bool:
        """Nothing to do: the server optimizes and indexes in the background."""
        return False

    def flush(self) -> None:
        """Nothing to do: upserts wait for the server's WAL (``wait=True``)."""

    def close(self) -> None:
        self._client.close()
