"""A held-out validation set from the *train* split, for choices that must not be made on dev.

Mirrors `small/`'s construction (a sample of queries, their relevant documents plus random others)
but draws only from train: queries outside the seeded --limit-train-queries sample the adapters were
trained on, and documents relevant to no dev query. Writes a BEIR folder whose qrels split is
`heldout`, so `reprank eval --dataset OUT --split heldout` runs it.

    python benchmarks/make_heldout.py ../shared/data/debian-packages data/heldout-150 --queries 150
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from indexer.corpus import read_corpus, read_qrels, read_qrels_file, read_queries
from training.data import select_queries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("output")
    p.add_argument("--queries", type=int, default=150)
    p.add_argument("--docs-per-query", type=int, default=10, help="corpus size = queries x this")
    p.add_argument("--trained-queries", type=int, default=4000, help="the recipes' --limit-train-queries")
    p.add_argument("--trained-seed", type=int, default=42, help="the recipes' --seed")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--exclude-queries", nargs="*", default=[], metavar="QRELS",
                   help="qrels files of further queries to leave out (another run's, an earlier held-out set)")
    a = p.parse_args()

    train, dev = read_qrels(a.dataset, "train"), read_qrels(a.dataset, "dev")
    trained = set(select_queries(train, a.trained_queries, a.trained_seed))
    trained |= {q for path in a.exclude_queries for q in read_qrels_file(path)}
    rng = random.Random(a.seed)
    qids = sorted(rng.sample(select_queries(train, None, 0, frozenset(trained)), a.queries))
    qrels = {q: {d: g for d, g in train[q].items() if g > 0} for q in qids}
    dev_docs = {d for rel in dev.values() for d in rel}
    train_docs = sorted({d for rel in train.values() for d in rel} - dev_docs)
    keep = {d for rel in qrels.values() for d in rel}
    keep |= set(rng.sample([d for d in train_docs if d not in keep], a.queries * a.docs_per_query - len(keep)))

    out = Path(a.output)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc in read_corpus(a.dataset):
            if doc.doc_id in keep:
                f.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    texts = read_queries(a.dataset, set(qids))
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": texts[q]}) + "\n" for q in qids)
    with open(out / "qrels" / "heldout.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{g}\n" for q in qids for d, g in sorted(qrels[q].items()))
    print(f"{out}: {len(qids)} held-out train queries over {len(keep)} documents")


if __name__ == "__main__":
    main()
