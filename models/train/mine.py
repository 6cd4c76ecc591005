"""Hard negatives mined with the project's own index: train queries against the train side of the corpus.

The pool is the positives of the selected train queries plus a seeded sample of other train-side
documents (--corpus-limit; all of them when unset). It is indexed with the given encoder by
indexer.run.index_corpus (idempotent, so a killed run resumes), every query retrieves its top
depth + positives through store.query (dense, or hybrid = dense + BM25 RRF) or store.query_bm25, and
the positives are dropped. The output feeds `reprank train retriever|reranker --hard-negatives`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from tqdm import tqdm

from indexer.run import derived_collection, encode_queries, index_corpus
from indexer.store import VectorStore
from models.train.data import load_train, write_negatives

log = logging.getLogger("reprank.train")
METHODS = ("dense", "hybrid", "bm25")


def mine(dataset: str | Path, encoder, store: VectorStore, output: str | Path, *, limit_queries: int | None = None,
         corpus_limit: int | None = None, depth: int = 30, method: str = "dense", seed: int = 0,
         collection: str | None = None, progress: bool = True) -> dict[str, list[str]]:
    train = load_train(dataset, limit_queries, seed)
    qids = train.query_ids
    wanted = sorted({d for q in qids for d in train.positives[q]})
    others = sorted(set(train.corpus) - set(wanted))
    if corpus_limit is not None and len(wanted) + len(others) > corpus_limit:
        others = sorted(random.Random(seed).sample(others, max(corpus_limit - len(wanted), 0)))
    pool = [train.corpus[d] for d in wanted + others]
    collection = collection or derived_collection("mine", dataset, encoder, limit_queries, corpus_limit, seed)
    log.info("mining: %d train queries over %d train documents in collection %s", len(qids), len(pool), collection)
    index_corpus(pool, encoder, store, collection, total=len(pool), progress=progress)

    texts = [train.queries[q] for q in qids]
    vectors = [] if method == "bm25" else encode_queries(encoder, texts)
    negatives = {}
    for i, q in enumerate(tqdm(qids, desc="mining", unit="query", disable=not progress)):
        limit = depth + len(train.positives[q])
        if method == "bm25":
            hits = store.query_bm25(collection, texts[i], limit)
        else:
            hits = store.query(collection, vectors[i], limit, hybrid_text=texts[i] if method == "hybrid" else None)
        negatives[q] = [h.doc_id for h in hits if h.doc_id not in train.positives[q]][:depth]
    write_negatives(output, negatives)
    log.info("wrote hard negatives of %d queries to %s", len(negatives), output)
    return negatives
