"""Qdrant Edge: Qdrant's engine in this process, the embedded default store."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import qdrant_edge as edge

from store.contract import Closing, CollectionNotFound, Hit, StoreError, StoreLocked
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

_ID_BATCH = 1024
_VERSION = edge.PayloadSelector.Include(["version"])  # all a first passage is read for: its committed version


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


class EdgeStore(Closing):
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

    def create_collection(self, name: str, dim: int, info: dict) -> bool:
        with self._lock:
            meta = self._read_meta(name)
            if meta is not None:
                check_compatible(name, meta["dim"], meta["info"], dim, info)
                return False
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
                for field in ("passage", "version"):
                    shard.update(edge.UpdateOperation.create_field_index(field, edge.PayloadSchemaType.Integer))
            meta = {"dim": dim, "info": info, "created": now(), "updated": now()}
            self._write_meta(name, meta)  # written last: marks the collection complete
            self._open[name] = (shard, meta)
            return True

    def _write_meta(self, name: str, meta: dict) -> None:
        tmp = self._dir(name) / "reprank.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self._dir(name) / "reprank.json")

    def collection_info(self, name: str) -> dict:
        with self._lock:
            _, meta = self._shard(name)
            return {"name": name, "dim": meta["dim"], "count": self.count(name),
                    "passages": self.count_passages(name), "info": meta["info"],
                    "created": meta.get("created"), "updated": meta.get("updated")}

    def check_info(self, name: str, info: dict) -> None:
        """StoreMismatch when `info` (the querying model's identity) differs from the collection's."""
        with self._lock:
            _, meta = self._shard(name)
        check_identity(name, meta["info"], info)

    def list_collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "reprank.json").is_file())

    def upsert(self, name: str, docs: Sequence[Document | Passage], vectors: np.ndarray) -> None:
        """store.layout.WritePlan's three steps: later passages, first passages (the commit), old versions
        out. Each step is one Edge update, appended to its WAL before it returns."""
        with self._lock:
            shard, meta = self._shard(name)
            plan = write_plan(name, docs, vectors, meta["dim"])
            with self._errors(name):
                for part in (plan.rest, plan.commits):
                    if part:
                        shard.update(edge.UpdateOperation.upsert_points([
                            edge.Point(passage_point_id(p, plan.version), {DENSE: v, SPARSE: doc_sparse(p)},
                                       payload(p, plan.version)) for p, v in part]))
                if plan.doc_ids:
                    shard.update(edge.UpdateOperation.delete_points_by_filter(edge.Filter(
                        must=[edge.FieldCondition("doc_id", match=edge.MatchAny(plan.doc_ids))],
                        must_not=[edge.FieldCondition("version", match=edge.MatchValue(plan.version))])))
            self._touch(name, meta)

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> int:
        with self._lock:
            shard, meta = self._shard(name)
            present = self.existing_doc_ids(name, doc_ids)
            if doc_ids:
                with self._errors(name):  # commit records first, so a kill midway leaves no half document
                    shard.update(edge.UpdateOperation.delete_points([point_id(d) for d in present]))
                    shard.update(edge.UpdateOperation.delete_points_by_filter(edge.Filter(
                        must=[edge.FieldCondition("doc_id", match=edge.MatchAny(list(doc_ids)))])))
            self._touch(name, meta)
            return len(present)

    def _touch(self, name: str, meta: dict) -> None:
        """The collection's `updated` time, in its reprank.json."""
        meta["updated"] = now()
        self._write_meta(name, meta)

    def existing_doc_ids(self, name: str, doc_ids: Sequence[str]) -> set[str]:
        return set(self._committed(name, doc_ids))

    def _committed(self, name: str, doc_ids: Sequence[str]) -> dict[str, int | None]:
        """{doc_id: its committed version} of the documents that exist (first passages)."""
        with self._lock:
            shard, _ = self._shard(name)
            by_id = {point_id(d): d for d in doc_ids}
            found: dict[str, int | None] = {}
            for ids in chunks(list(by_id), _ID_BATCH):
                with self._errors(name):
                    found.update((by_id[str(r.id)], r.payload.get("version")) for r in shard.retrieve(ids, _VERSION, False))
            return found

    def count(self, name: str) -> int:
        with self._lock:
            shard, _ = self._shard(name)
            with self._errors(name):
                return shard.count(edge.CountRequest(exact=True, filter=edge.Filter(
                    must_not=[edge.FieldCondition("passage", range=edge.RangeFloat(gte=1))])))

    def count_passages(self, name: str) -> int:
        with self._lock:
            shard, _ = self._shard(name)
            with self._errors(name):
                return shard.count(edge.CountRequest(exact=True))

    def query(self, name: str, vector: np.ndarray, limit: int, filter: dict | None = None, *,
              hybrid_text: str | None = None) -> list[Hit]:
        """Dense nearest neighbours; with ``hybrid_text``, fused with BM25 (store.fusion)."""
        check_limit(limit)
        flt = _edge_filter(parse_filter(filter))
        sparse = query_sparse(hybrid_text)
        with self._lock:
            shard, meta = self._shard(name)
            dense = edge.Query.Nearest(query_vector(name, vector, meta["dim"]), using=DENSE)
            hits = self._search(name, shard, dense, limit, flt)
            if sparse is None:  # no hybrid text, or no BM25 term in it (only stopwords): dense alone
                return hits
            lexical = self._search(name, shard, edge.Query.Nearest(sparse, using=SPARSE), limit, flt)
        return rrf([hits, lexical], limit)

    def query_bm25(self, name: str, text: str, limit: int, filter: dict | None = None) -> list[Hit]:
        """BM25 alone over the stored sparse vectors: the lexical baseline of `reprank eval`."""
        check_limit(limit)
        flt = _edge_filter(parse_filter(filter))
        sparse = query_sparse(text)
        with self._lock:
            shard, _ = self._shard(name)
            if sparse is None:  # only stopwords: nothing can match
                return []
            return self._search(name, shard, edge.Query.Nearest(sparse, using=SPARSE), limit, flt)

    def _search(self, name: str, shard: edge.EdgeShard, query, limit: int, flt) -> list[Hit]:
        with self._errors(name):
            points = shard.query(edge.QueryRequest(limit=limit, query=query, filter=flt, with_payload=True))
        hits = [Hit(p.payload["doc_id"], float(p.score), p.payload) for p in points]
        if any(h.passage for h in hits):  # a later passage counts only in its document's committed version
            hits = committed_only(hits, self._committed(name, list({h.doc_id for h in hits if h.passage})))
        return ranked(hits)

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
