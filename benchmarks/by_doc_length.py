"""Per-query nDCG@10 of TREC runs, grouped by the length (in words) of the query's longest relevant
document: where on a set one encoder wins or loses against another (e.g. reprank dense against
all-MiniLM-L6-v2 on long GNU Info nodes).

    python benchmarks/by_doc_length.py DATASET SPLIT RUN.trec [RUN.trec ...] [--edges 100 200 300]
"""

from __future__ import annotations

import argparse
import bisect

import ir_measures
from compare_runs import answered, longest_relevant, per_query, read_run

from indexer.corpus import read_qrels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset")
    p.add_argument("split")
    p.add_argument("runs", nargs="+")
    p.add_argument("--edges", type=int, nargs="+", default=[100, 200, 300],
                   help="bucket bounds in words (a bucket holds lengths below its bound)")
    args = p.parse_args()

    runs = [read_run(r) for r in args.runs]
    every = answered(*runs)
    qrels = {q: rel for q, rel in read_qrels(args.dataset, args.split).items() if q in every}
    longest = longest_relevant(args.dataset, qrels)
    scores = [per_query(ir_measures.nDCG @ 10, qrels, run) for run in runs]
    labels = [f"< {e}" for e in args.edges] + [f">= {args.edges[-1]}"]
    buckets: dict[int, list[str]] = {}
    for q in sorted(qrels):
        buckets.setdefault(bisect.bisect_right(args.edges, longest[q]), []).append(q)

    def row(label: str, qs: list[str]) -> None:
        print(label.ljust(10), str(len(qs)).rjust(8), *(f"{sum(s[q] for q in qs) / len(qs):42.4f}" for s in scores))

    print("words".ljust(10), "queries".rjust(8), *(r.rsplit("/", 1)[-1][-40:].rjust(42) for r in args.runs))
    for b in sorted(buckets):
        row(labels[b], buckets[b])
    row("all", sorted(qrels))


if __name__ == "__main__":
    main()
