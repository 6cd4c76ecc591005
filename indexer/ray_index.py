"""`reprank index --engine ray`: Ray Data reads the corpus, an actor pool embeds it, the driver writes.

Each actor loads the encoder once and encodes its blocks through the same `Encoder` and token
batcher as the single-process indexer (one actor per GPU, or CPU actors). The vectors stream back
to the driver, which upserts them through the same `VectorStore`, so the points (ids, vectors, BM25,
payload) are the ones `index_corpus` writes. Writes stay in the driver on purpose: the embedded
store and qdrant-client's local mode are one-process stores, and for a Qdrant server one writer
batching 128 points per request is far from the bottleneck of a GPU encoder pool (README: Ray).
Unlike `index_corpus`, a rerun re-encodes every document (upserts are idempotent, so it is correct).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.corpus import corpus_file, to_document
from indexer.passages import split, window_for
from indexer.run import IndexStats
from store import Document, VectorStore, passage_text
from store.documents import Passage


@dataclass(frozen=True)
class EncoderSpec:
    """What an actor needs to open the encoder itself (the model never travels through Ray)."""

    model: str
    preset: str | None
    base: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    max_batch_tokens: int = 2048
    max_batch_size: int = 64
    passage_tokens: int | None = None  # the window a long document is split by (indexer.passages)
    passage_stride: int | None = None


def _parse(batch) -> Any:
    """Raw rows (a JSONL line in `text`, or Parquet columns) -> doc_id, title, text, metadata (JSON)."""
    import pyarrow as pa

    if "__line" in batch.column_names:  # JSONL: the same record checks as the single-process reader
        records = [json.loads(line) for line in batch.column("__line").to_pylist()]
    else:
        records = batch.to_pylist()
    docs = [to_document(r, f"record {r.get('_id', r.get('id'))!r}") for r in records]
    return pa.table({"doc_id": [d.doc_id for d in docs], "title": [d.title for d in docs],
                     "text": [d.text for d in docs], "metadata": [json.dumps(d.metadata) for d in docs]})


def _documents(batch) -> list[Document]:
    cols = batch.to_pydict()
    return [Document(i, x, t, json.loads(m))
            for i, x, t, m in zip(cols["doc_id"], cols["text"], cols["title"], cols["metadata"], strict=True)]


def _passages(batch) -> list[Passage]:
    """An actor's output rows back into passages (all of a document's passages are in one batch)."""
    cols = batch.to_pydict()
    return [Passage(d, i, a, b) for d, i, a, b in zip(_documents(batch), cols["passage"], cols["start"], cols["end"],
                                                      strict=True)]


class EncodeActor:
    """One encoder per actor; `__call__` adds a `vector` column (fixed-size float32 list)."""

    def __init__(self, spec: EncoderSpec):
        import torch

        from models import open_encoder

        self.encoder = open_encoder(spec.model, spec.preset, base=spec.base, device=spec.device,
                                    dtype=getattr(torch, spec.dtype), max_batch_tokens=spec.max_batch_tokens,
                                    max_batch_size=spec.max_batch_size)
        self.window = window_for(self.encoder, spec.passage_tokens, spec.passage_stride)

    def __call__(self, batch):
        """A row per passage (a long document split as index_corpus splits it), with its vector."""
        import pyarrow as pa

        passages = [p for d in _documents(batch) for p in split(d, self.encoder.tokenizer, self.window)]
        enc = self.encoder.encode([passage_text(p.doc) for p in passages], "passage", truncate=True)
        flat = pa.array(enc.vectors.astype(np.float32).reshape(-1))
        return pa.table({
            "doc_id": [p.doc.doc_id for p in passages], "title": [p.doc.title for p in passages],
            "text": [p.doc.text for p in passages], "metadata": [json.dumps(p.doc.metadata) for p in passages],
            "passage": [p.index for p in passages], "start": [p.span[0] for p in passages],
            "end": [p.span[1] for p in passages],
            "vector": pa.FixedSizeListArray.from_arrays(flat, enc.vectors.shape[1]),
            "truncated": [enc.truncated_tokens] + [0] * (len(passages) - 1)})


def read_dataset(corpus: str | Path):
    """The corpus as a Ray dataset of raw rows (JSONL lines stay text until `_parse`)."""
    import ray.data

    path = corpus_file(corpus)
    if path.suffix == ".parquet":
        return ray.data.read_parquet(str(path))
    gz = {"compression": "gzip"} if path.suffix == ".gz" else None
    lines = ray.data.read_text(str(path), arrow_open_stream_args=gz)
    return lines.rename_columns({"text": "__line"})


def index_with_ray(
    corpus: str | Path,
    spec: EncoderSpec,
    info: dict,
    store: VectorStore,
    collection: str,
    *,
    actors: int = 1,
    chunk_size: int = 64,
    gpus_per_actor: float = 0.0,
) -> IndexStats:
    """Embed `corpus` on the connected Ray cluster (call `ray.init` first) and upsert into `collection`."""
    import ray.data

    stats = IndexStats()
    start = time.perf_counter()
    vectors = (read_dataset(corpus)
               .map_batches(_parse, batch_format="pyarrow", batch_size=chunk_size)
               .map_batches(EncodeActor, fn_constructor_args=(spec,), batch_format="pyarrow",
                            batch_size=chunk_size, compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=0 if gpus_per_actor else 1, num_gpus=gpus_per_actor))
    created = False
    for batch in vectors.iter_batches(batch_format="pyarrow", batch_size=None):
        matrix = batch.column("vector").combine_chunks()
        dim = matrix.type.list_size
        if not created:
            store.create_collection(collection, dim, info)
            created = True
        passages = _passages(batch)
        store.upsert(collection, passages, matrix.flatten().to_numpy().reshape(-1, dim))
        documents = sum(p.index == 0 for p in passages)
        stats.seen += documents
        stats.indexed += documents
        stats.passages += len(passages)
        stats.truncated_tokens += sum(batch.column("truncated").to_pylist())
    if created:
        store.optimize(collection)
    store.flush()
    stats.seconds = time.perf_counter() - start
    return stats
