"""Paired per-query comparison of two TREC run files (as `reprank eval --output` writes them).

    python benchmarks/compare_runs.py DATASET SPLIT BEFORE.trec AFTER.trec [--measure nDCG@10]
        [--also DATASET2 BEFORE2.trec AFTER2.trec ...]   # pool the queries of further sets (same split)
        [--min-doc-words N]   # only queries whose longest relevant document has at least N words

Prints the mean of each run over the queries both answered, how many queries got better and worse,
and the two-sided p-value of a paired randomization test (random sign flips of the per-query
differences, seeded): the test Smucker, Allan and Carterette (CIKM 2007) recommend for IR runs, with
no normality assumption. The RESULTS.md significance figures from 2026-11-27 on come from here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ir_measures
import numpy as np

from indexer.corpus import read_corpus, read_qrels
from search.evaluate import judged
from training.sources import words


def read_run(path: str | Path) -> list[ir_measures.ScoredDoc]:
    """TREC lines `qid Q0 docid rank score tag`; the rank decides the order, as in the eval."""
    run = []
    for line in Path(path).read_text().splitlines():
        qid, _, doc, rank, *_ = line.split()
        run.append(ir_measures.ScoredDoc(qid, doc, -float(rank)))
    return run


def per_query(measure, qrels: dict[str, dict[str, int]], run: list) -> dict[str, float]:
    return {m.query_id: m.value for m in ir_measures.iter_calc([measure], judged(qrels), run)}


def answered(*runs: list[ir_measures.ScoredDoc]) -> set[str]:
    """The queries every run answered: ir-measures scores a judged query a run lacks as 0, so a run cut
    short (`--max-queries`) must be compared on these alone."""
    return set.intersection(*({d.query_id for d in run} for run in runs))


def longest_relevant(dataset: str | Path, qrels: dict[str, dict[str, int]]) -> dict[str, int]:
    """Each query's longest relevant document, in words counted as the sources count them when they clip
    at 300: where an encoder's window matters."""
    length = {d.doc_id: words(d.text) for d in read_corpus(dataset)}
    return {q: max((length.get(d, 0) for d, grade in rel.items() if grade > 0), default=0) for q, rel in qrels.items()}


def randomization_p(diffs: np.ndarray, trials: int = 100_000, seed: int = 0) -> float:
    """Share of random sign flips whose mean difference is at least as far from 0 as the observed one."""
    if not diffs.any():
        return 1.0
    rng, observed, hits = np.random.default_rng(seed), abs(diffs.sum()) - 1e-12, 0
    for start in range(0, trials, 10_000):  # in blocks: 100,000 x 500 signs at once would take 400 MB
        signs = rng.choice([-1.0, 1.0], size=(min(10_000, trials - start), diffs.size))
        hits += int(np.sum(np.abs(signs @ diffs) >= observed))
    return (hits + 1) / (trials + 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("split")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--measure", default="nDCG@10", help="an ir-measures name, e.g. nDCG@10, RR@10, R@100")
    p.add_argument("--also", nargs=3, action="append", default=[], metavar=("DATASET", "BEFORE", "AFTER"),
                   help="another set's runs, pooled with the first (each query counts once)")
    p.add_argument("--min-doc-words", type=int, default=0,
                   help="only queries whose longest relevant document has at least this many words")
    args = p.parse_args()
    measure = ir_measures.parse_measure(args.measure)
    x, y = [], []
    for dataset, before_path, after_path in [(args.dataset, args.before, args.after), *args.also]:
        qrels = read_qrels(dataset, args.split)
        if args.min_doc_words:
            longest = longest_relevant(dataset, qrels)
            qrels = {q: rel for q, rel in qrels.items() if longest[q] >= args.min_doc_words}
        before, after = read_run(before_path), read_run(after_path)
        a, b = per_query(measure, qrels, before), per_query(measure, qrels, after)
        queries = sorted(a.keys() & b.keys() & answered(before, after))
        x += [a[q] for q in queries]
        y += [b[q] for q in queries]
    x, y = np.array(x), np.array(y)
    d = y - x
    print(f"{len(d)} queries, {measure}: {x.mean():.4f} -> {y.mean():.4f} ({d.mean():+.4f}); "
          f"{int((d > 1e-9).sum())} better, {int((d < -1e-9).sum())} worse; "
          f"paired randomization test p = {randomization_p(d):.2g}")


if __name__ == "__main__":
    main()
