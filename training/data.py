"""Training data from a BEIR folder: the train split only, deterministic sampling, hard-negative files.

Only `qrels/train.tsv` is ever opened here (`TRAIN`), so dev query ids cannot reach training or
mining; queries.jsonl holds both splits and is filtered to the train ids while it is read. Every
random choice is a function of (seed, micro-step), so a run resumed from a checkpoint sees exactly
the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from indexer.corpus import Document, read_corpus, read_qrels, read_qrels_file, read_queries

TRAIN = "train"


@dataclass
class TrainSet:
    queries: dict[str, str]  # selected train queries: id -> text
    positives: dict[str, list[str]]  # id -> relevant doc ids (grade > 0)
    corpus: dict[str, Document]  # the train side of the corpus: every doc relevant to some train query

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    @functools.cached_property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)


def select_queries(qrels: dict[str, dict[str, int]], limit: int | None, seed: int,
                   exclude: frozenset[str] = frozenset()) -> list[str]:
    """The train queries a run uses: all, or a seeded sample of `limit` (mining and training agree),
    never one of `exclude` (a held-out set drawn from train)."""
    ids = sorted(q for q, rel in qrels.items() if q not in exclude and any(g > 0 for g in rel.values()))
    if limit is not None and limit < len(ids):
        ids = sorted(random.Random(seed).sample(ids, limit))
    return ids


def load_train(dataset: str | Path, limit_queries: int | None = None, seed: int = 0,
               exclude: str | Path | None = None) -> TrainSet:
    """The selected train queries, their positives and the train side of the corpus; `exclude` is a
    qrels file whose queries are left out (--exclude-queries)."""
    qrels = read_qrels(dataset, TRAIN)
    held_out = frozenset(read_qrels_file(exclude)) if exclude else frozenset()
    chosen = select_queries(qrels, limit_queries, seed, held_out)
    queries = read_queries(dataset, set(chosen))
    missing = [q for q in chosen if q not in queries]
    if missing:
        raise ValueError(f"{dataset}: {len(missing)} train queries have no text, e.g. {missing[0]}")
    positives = {q: sorted(d for d, g in qrels[q].items() if g > 0) for q in chosen}
    train_docs = {d for rel in qrels.values() for d, g in rel.items() if g > 0}
    corpus = {doc.doc_id: doc for doc in read_corpus(dataset) if doc.doc_id in train_docs}
    lost = {d for ds in positives.values() for d in ds} - corpus.keys()
    if lost:
        raise ValueError(f"{dataset}: {len(lost)} relevant documents are not in the corpus, e.g. {min(lost)}")
    return TrainSet(queries, positives, corpus)


def step_rng(seed: int, micro_step: int) -> random.Random:
    return random.Random(seed * 1_000_003 + micro_step)


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 7919 + epoch).shuffle(order)
    return order


def batch_indices(n: int, batch_size: int, micro_step: int, seed: int) -> list[int]:
    """Epoch-wise shuffled indices into n items for one micro-batch (every item once per epoch)."""
    return [_epoch_order(n, seed, pos // n)[pos % n]
            for pos in range(micro_step * batch_size, (micro_step + 1) * batch_size)]


def sample_group(train: TrainSet, qid: str, size: int, negatives: dict[str, list[str]] | None,
                 rng: random.Random) -> list[Document]:
    """One positive, then size-1 negatives: hard ones first, topped up with random train documents."""
    pos = train.positives[qid]
    group = [rng.choice(pos)]
    hard = [d for d in (negatives or {}).get(qid, []) if d in train.corpus and d not in pos]
    group += rng.sample(hard, min(size - 1, len(hard)))
    doc_ids = train.doc_ids
    if len(doc_ids) < size + len(pos):
        raise ValueError(f"the train corpus has {len(doc_ids)} documents, too few for groups of {size}")
    while len(group) < size:
        d = doc_ids[rng.randrange(len(doc_ids))]
        if d not in pos and d not in group:
            group.append(d)
    return [train.corpus[d] for d in group]


def write_negatives(path: str | Path, negatives: dict[str, list[str]]) -> None:
    """JSONL, one line per train query: {"query_id", "negatives": [doc ids, best first]}."""
    with open(path, "w", encoding="utf-8") as f:
        for qid, docs in negatives.items():
            f.write(json.dumps({"query_id": qid, "negatives": docs}) + "\n")


def read_negatives(path: str | Path) -> dict[str, list[str]]:
    with open(path, encoding="utf-8") as f:
        return {(r := json.loads(line))["query_id"]: r["negatives"] for line in f if line.strip()}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n\s*\n")


def sentences(text: str, min_words: int = 4) -> list[str]:
    """Split a description into sentences (and paragraphs); fragments under min_words join the previous."""
    out: list[str] = []
    for piece in (p.strip() for p in _SENTENCE_END.split(text)):
        if not piece:
            continue
        if out and len(piece.split()) < min_words:
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out
