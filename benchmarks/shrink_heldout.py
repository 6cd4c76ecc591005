"""A smaller copy of a held-out folder (`train sources` writes one with 1,500 documents): the same
queries, their relevant documents, and seeded random others up to --docs, so that scoring a candidate
adapter on a CPU takes minutes.

    python benchmarks/shrink_heldout.py data/sources/pydoc/heldout data/heldout/pydoc-500 --docs 500
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from indexer.corpus import read_corpus, read_qrels, read_queries
from training.sources import Record, write_beir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--split", default="heldout")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    src, out = Path(a.source), Path(a.output)
    qrels = {q: set(rel) for q, rel in read_qrels(src, a.split).items()}
    keep = {d for rel in qrels.values() for d in rel}
    docs = list(read_corpus(src))
    others = sorted(d.doc_id for d in docs if d.doc_id not in keep)
    keep |= set(random.Random(a.seed).sample(others, max(0, min(len(others), a.docs - len(keep)))))
    write_beir(out, read_queries(src, set(qrels)), {d.doc_id: Record(None, d.text, d.title) for d in docs
                                                     if d.doc_id in keep}, {a.split: qrels})
    print(f"{out}: {len(qrels)} queries over {len(keep)} documents")


if __name__ == "__main__":
    main()
