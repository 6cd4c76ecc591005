"""Hard negatives mined with the project's own index: train queries against the train side of the corpus.

The pool is every train-side document, or with --corpus-limit (CPU runs, where encoding all of them
takes hours) the positives of the selected train queries, then their BM25 neighbours over the whole
train side (bm25s, taken rank by rank across queries: the near-duplicate -dev/-doc/lib variants that
make hard negatives hard are lexical neighbours), then random train documents. It is indexed with
the given encoder by indexer.run.index_corpus (idempotent, so a killed run resumes), every query retrieves its top
depth + positives through store.query (dense, or hybrid = dense + BM25 RRF), and the positives are
dropped. --method bm25 needs no encoder: `mine_bm25` ranks the whole train side with bm25s directly.
The output feeds `reprank train retriever|reranker --hard-negatives`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from indexer.run import derived_collection, encode_queries, index_corpus
from store import VectorStore, passage_text
from training.data import load_train, write_negatives

if TYPE_CHECKING:
    from models.encoder import Encoder

log = logging.getLogger("reprank.train")


def mine(dataset: str | Path, encoder: Encoder, store: VectorStore, output: str | Path, *, limit_queries: int | None = None,
         corpus_limit: int | None = None, depth: int = 30, method: str = "dense", seed: int = 0,
         collection: str | None = None, progress: bool = True, exclude: str | None = None) -> dict[str, list[str]]:
    if method not in ("dense", "hybrid"):  # bm25 needs no index: mine_bm25
        raise ValueError(f"mine: method {method!r} is not dense or hybrid")
    train = load_train(dataset, limit_queries, seed, exclude)
    qids = train.query_ids
    pool = [train.corpus[d] for d in _pool(train, corpus_limit, seed)]
    collection = collection or derived_collection("mine", dataset, encoder, [d.doc_id for d in pool])
    log.info("mining: %d train queries over %d train documents in collection %s", len(qids), len(pool), collection)
    index_corpus(pool, encoder, store, collection, total=len(pool), progress=progress)

    texts = [train.queries[q] for q in qids]
    vectors = encode_queries(encoder, texts)
    negatives = {}
    for i, q in enumerate(tqdm(qids, desc="mining", unit="query", disable=not progress)):
        limit = depth + len(train.positives[q])
        hits = store.query(collection, vectors[i], limit, hybrid_text=texts[i] if method == "hybrid" else None)
        negatives[q] = [h.doc_id for h in hits if h.doc_id not in train.positives[q]][:depth]
    write_negatives(output, negatives)
    log.info("wrote hard negatives of %d queries to %s", len(negatives), output)
    return negatives


def mine_bm25(dataset: str | Path, output: str | Path, *, limit_queries: int | None = None, depth: int = 30,
              seed: int = 0, exclude: str | None = None) -> dict[str, list[str]]:
    """BM25 negatives straight from bm25s over every train-side document: no encoder, no index (seconds)."""
    train = load_train(dataset, limit_queries, seed, exclude)
    ids = train.doc_ids
    ranked = _bm25_ranking(train, depth + max(len(p) for p in train.positives.values()))
    negatives = {q: [ids[i] for i in row if ids[i] not in train.positives[q]][:depth]
                 for q, row in zip(train.query_ids, ranked, strict=True)}
    write_negatives(output, negatives)
    log.info("wrote BM25 negatives of %d queries over %d train documents to %s", len(negatives), len(ids), output)
    return negatives


def _bm25_ranking(train, k: int):
    """Row per selected train query: indices into train.doc_ids, best BM25 match first."""
    import bm25s

    ids = train.doc_ids
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([passage_text(train.corpus[d]) for d in ids], stopwords="en",
                                   show_progress=False), show_progress=False)
    queries = bm25s.tokenize([train.queries[q] for q in train.query_ids], stopwords="en", show_progress=False)
    ranked, _ = retriever.retrieve(queries, k=min(k, len(ids)), show_progress=False, n_threads=1)
    return ranked


def _pool(train, corpus_limit: int | None, seed: int, neighbours: int = 10) -> list[str]:
    """Doc ids to index: positives first, then BM25 neighbours rank by rank, then random (see above)."""
    if corpus_limit is None or corpus_limit >= len(train.corpus):
        return sorted(train.corpus)
    chosen = dict.fromkeys(d for q in train.query_ids for d in train.positives[q])
    ids = train.doc_ids
    ranked = _bm25_ranking(train, neighbours)
    for rank in range(ranked.shape[1]):
        for i in ranked[:, rank]:
            if len(chosen) >= corpus_limit:
                return list(chosen)
            chosen.setdefault(ids[i])
    rest = sorted(set(ids) - chosen.keys())
    return list(chosen) + random.Random(seed).sample(rest, max(min(corpus_limit - len(chosen), len(rest)), 0))
