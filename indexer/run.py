"""Encode a corpus and upsert it, in chunks, resumably.

Point ids derive from doc ids, so running again (or after a kill) rewrites nothing twice: each
chunk first asks the store which of its documents are already there and encodes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from indexer.passages import Window, split, window_for
from store import VectorStore

if TYPE_CHECKING:  # the torch engine itself: indexing needs its dim, source and preset
    from models.encoder import Encoder
from store.documents import Document, passage_text


@dataclass
class IndexStats:
    seen: int = 0
    skipped: int = 0  # already in the collection
    indexed: int = 0
    passages: int = 0  # of the indexed documents (more than one where a document is longer than the window)
    truncated_tokens: int = 0
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0


def _chunks(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


def collection_info(source: str, preset: str) -> dict:
    """What makes a collection's vectors; the store refuses vectors, and searches, that differ in it."""
    from models.loading import model_revision

    return {"model": source, "preset": preset, "revision": model_revision(source)}


def encode_queries(encoder: Encoder, texts: list[str], chunk_size: int = 256) -> np.ndarray:
    """Query vectors in chunks, so a long list never overflows the batcher's bounded queue."""
    parts = [encoder.encode(texts[i : i + chunk_size], "query", truncate=True).vectors
             for i in range(0, len(texts), chunk_size)]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


def derived_collection(prefix: str, dataset: str | Path, encoder: Encoder, *extra) -> str:
    """A collection name for (dataset, encoder, extra): reused while they are the same, new otherwise.

    The model counts with its revision (its weights' fingerprint), so retraining an adapter in place,
    or a release that ships a new bundled adapter under the same name, gets a fresh collection
    instead of silently reusing the old vectors; so does the preset's max length, which sets the
    passage window the documents were split by.
    """
    info = collection_info(encoder.model.source, encoder.preset.name)
    key = json.dumps([str(Path(dataset).resolve()), info, encoder.preset.max_length, *extra])
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(Path(dataset).resolve().parts[-2:]))[-24:].strip("-._")
    return f"{prefix}-{name}-{encoder.preset.name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def index_corpus(
    docs: Iterable[Document],
    encoder: Encoder,
    store: VectorStore,
    collection: str,
    *,
    chunk_size: int = 64,
    total: int | None = None,
    progress: bool = True,
    window: Window | None = None,
) -> IndexStats:
    """Documents longer than `window` (default: the encoder's, indexer.passages) become several passages."""
    window = window or window_for(encoder)
    store.create_collection(collection, encoder.dim, collection_info(encoder.model.source, encoder.preset.name))
    stats = IndexStats()
    start = time.perf_counter()
    bar = tqdm(total=total, unit="doc", desc=f"indexing {collection}", disable=not progress, smoothing=0.1)
    for chunk in _chunks(docs, chunk_size):
        first: dict[str, Document] = {}
        for d in chunk:
            first.setdefault(d.doc_id, d)  # a repeated id keeps its first copy, as across chunks
        unique = list(first.values())
        present = store.existing_doc_ids(collection, [d.doc_id for d in unique])
        todo = [d for d in unique if d.doc_id not in present]
        if todo:
            passages = [p for d in todo for p in split(d, encoder.tokenizer, window)]
            enc = encoder.encode([passage_text(p.doc) for p in passages], "passage", truncate=True)
            store.upsert(collection, passages, enc.vectors)
            stats.truncated_tokens += enc.truncated_tokens
            stats.passages += len(passages)
        stats.seen += len(chunk)
        stats.skipped += len(unique) - len(todo)
        stats.indexed += len(todo)
        stats.seconds = time.perf_counter() - start
        bar.update(len(chunk))
        bar.set_postfix(new=stats.indexed, skipped=stats.skipped, docs_s=f"{stats.docs_per_s:.1f}")
    bar.close()
    store.optimize(collection)
    store.flush()
    stats.seconds = time.perf_counter() - start
    return stats
