"""`reprank eval`: nDCG@10, MRR@10 and Recall@100 of the served search pipelines on a BEIR dataset.

The corpus is indexed with the current encoder (index_corpus: a complete collection is reused, a
partial one finished). Each query of the split then runs through `Searcher.search`, the same call
/v1/search makes, once per pipeline: `bm25` (the same-run lexical baseline), `dense`, `hybrid`
(dense fused with BM25 by the store), `dense+rerank` / `hybrid+rerank` (the reranker rescoring the top
--rerank-depth candidates, ordered by its score alone; the rest keep their order below them, so
Recall@100 is the first stage's), and `dense+rerank+rrf` / `hybrid+rerank+rrf` (the same scores fused
with the retrieval ranks, as /v1/search orders them by default). A query is encoded once and a
(query, passage) pair scored once across the pipelines. Metrics come from ir-measures (pytrec_eval);
a query that retrieves nothing is scored 0, never dropped from the mean.

With `budgets_ms`, each reranked pipeline runs again per latency budget (named `<pipeline>@<B>ms`),
each search doing all of its own work (nothing shared with the other pipelines) so that the depth the
budget allows is the one /v1/search would rerank on an idle server; `info["budgets"]` has their
latency, mean reranked depth and the share that overran.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import ir_measures
from ir_measures import RR, R, nDCG
from tqdm import tqdm

from indexer.corpus import count_documents, read_corpus, read_qrels, read_queries
from indexer.run import collection_info, derived_collection, index_corpus
from models.interfaces import Encoded, PairScorer, Scored, Side, TextEncoder
from search.core import Searcher, SearchPlan, best_per_document
from store import VectorStore

if TYPE_CHECKING:
    from models.encoder import Encoder

PIPELINES = ("bm25", "dense", "hybrid", "dense+rerank", "hybrid+rerank",
             "dense+rerank+rrf", "hybrid+rerank+rrf")
MEASURES = {"ndcg@10": nDCG @ 10, "mrr@10": RR @ 10, "recall@100": R @ 100}
_NOTHING = "__no_result__"  # stands in for an empty result list so the query still counts as 0

Run = dict[str, list[str]]  # query id -> doc ids, best first


def plan_of(pipeline: str, collection: str, candidates: int, rerank_depth: int) -> SearchPlan:
    """The search a pipeline name stands for, returning every candidate (Recall@100 reads them)."""
    retrieval, *rest = pipeline.split("+")
    return SearchPlan(collection, top_k=candidates, candidates=candidates, rerank_depth=rerank_depth,
                      retrieval=retrieval, rerank="rerank" in rest, fusion="rrf" if "rrf" in rest else "none")


class _Once:
    """The models for one query's pipelines: its vector computed once, each (query, passage) scored once."""

    def __init__(self, encoder: TextEncoder, reranker: PairScorer | None):
        self.encoder, self.reranker = encoder, reranker
        self.vectors: dict[tuple, Encoded] = {}
        self.scores: dict[tuple[str, str], tuple[float, float]] = {}  # (query, passage) -> (score, relevance)

    async def embed(self, texts: list[str], side: Side, truncate: bool) -> Encoded:
        key = (side, truncate, *texts)
        if key not in self.vectors:
            self.vectors[key] = await self.encoder.embed(texts, side, truncate)
        return self.vectors[key]

    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        new = [d for d in dict.fromkeys(documents) if (query, d) not in self.scores]
        tokens = truncated = 0
        if new:
            scored = await self.reranker.rerank(query, new, truncate)
            self.scores.update(((query, d), pair) for d, pair in zip(new, zip(scored.scores, scored.relevance,
                                                                                strict=True), strict=True))
            tokens, truncated = scored.tokens, scored.truncated_tokens
        pairs = [self.scores[(query, d)] for d in documents]
        return Scored([s for s, _ in pairs], tokens, truncated, [r for _, r in pairs])

    async def aclose(self) -> None:
        """Nothing of its own: the caller closes the models it passed in."""


def evaluate(dataset: str | Path, split: str, encoder: Encoder, reranker: PairScorer | None, store: VectorStore, *,
             collection: str | None = None, pipelines: tuple[str, ...] = PIPELINES,
             max_queries: int | None = None, candidates: int = 100, rerank_depth: int = 20,
             budgets_ms: tuple[float, ...] = (), progress: bool = True,
             ) -> tuple[dict[str, dict[str, float]], dict[str, Run], dict]:
    """(metrics per pipeline, runs per pipeline, info: collection, query count, seconds per stage).

    `encoder` is a models.encoder.Encoder (it indexes the corpus, and encodes queries as a
    TextEncoder); `reranker` any PairScorer, or None to skip the +rerank pipelines."""
    if unknown := set(pipelines) - set(PIPELINES):
        raise ValueError(f"unknown pipelines {sorted(unknown)}; known: {', '.join(PIPELINES)}")
    if reranker is None:
        pipelines = tuple(p for p in pipelines if "+rerank" not in p)
    qrels = read_qrels(dataset, split)
    qids = list(qrels)[:max_queries] if max_queries else list(qrels)
    qrels = {q: qrels[q] for q in qids}
    queries = read_queries(dataset, set(qids))
    if missing := [q for q in qids if q not in queries]:
        raise ValueError(f"{dataset}: {len(missing)} {split} queries have no text, e.g. {missing[0]}")

    seconds: dict[str, float] = {}
    began = time.perf_counter()
    collection = collection or derived_collection("eval", dataset, encoder)
    index_corpus(read_corpus(dataset), encoder, store, collection, total=count_documents(dataset),
                 progress=progress)
    seconds["index"] = time.perf_counter() - began

    identity = collection_info(encoder.model.source, encoder.preset.name)
    plans = {p: plan_of(p, collection, candidates, rerank_depth) for p in pipelines}
    budgeted = {f"{p}@{b:g}ms": replace(plans[p], budget_s=b / 1000) for b in budgets_ms for p in pipelines
                if plans[p].rerank}
    spent: dict[str, list[tuple[float, int]]] = {p: [] for p in budgeted}  # (total ms, reranked) per search

    def observe(stage: str, s: float) -> None:
        seconds[stage] = seconds.get(stage, 0.0) + s

    async def run_all() -> dict[str, Run]:
        runs: dict[str, Run] = {p: {} for p in [*pipelines, *budgeted]}
        alone = Searcher(store, encoder, reranker, identity=identity)  # a budgeted search does all its own work
        for q in tqdm(qids, desc=f"eval {split}", unit="query", disable=not progress):
            once = _Once(encoder, reranker)
            searcher = Searcher(store, once, once if reranker else None, identity=identity, observe=observe)
            for p, plan in plans.items():
                found = await searcher.search(queries[q], plan)
                runs[p][q] = [r.hit.doc_id for r in best_per_document(found.results)]  # a document at its best passage
            for p, plan in budgeted.items():
                found = await alone.search(queries[q], plan)
                runs[p][q] = [r.hit.doc_id for r in best_per_document(found.results)]
                spent[p].append((found.timings_ms["total"], found.reranked_count))
        return runs

    runs = asyncio.run(run_all())
    metrics = {p: score_run(runs[p], qrels) for p in runs}
    info = {"dataset": str(dataset), "split": split, "queries": len(qids), "collection": collection,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "budgets": {p: budget_stats(spent[p], plan.budget_s * 1000) for p, plan in budgeted.items()}}
    return metrics, runs, info


def budget_stats(spent: list[tuple[float, int]], budget_ms: float) -> dict[str, float]:
    """Latency percentiles, mean reranked depth and the share of searches over their budget by over 10 %."""
    ms = sorted(t for t, _ in spent)
    return {"budget_ms": budget_ms, "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
            "mean_reranked": round(statistics.fmean(n for _, n in spent), 2),
            "over_budget_10pct": round(sum(t > 1.1 * budget_ms for t in ms) / len(ms), 4)}


def judged(qrels: dict[str, dict[str, int]]) -> list[ir_measures.Qrel]:
    """qrels as ir-measures reads them."""
    return [ir_measures.Qrel(q, d, g) for q, rel in qrels.items() for d, g in rel.items()]


def score_run(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100 averaged over every query of qrels, by ir-measures."""
    ranked = [ir_measures.ScoredDoc(q, d, float(len(docs) - i))  # rank-derived scores: the order is the run
              for q in qrels for docs in [run.get(q) or [_NOTHING]] for i, d in enumerate(docs)]
    agg = ir_measures.calc_aggregate(list(MEASURES.values()), judged(qrels), ranked)
    return {name: float(agg[m]) for name, m in MEASURES.items()}


def write_outputs(output: str | Path, metrics: dict, runs: dict[str, Run]) -> list[Path]:
    """The JSON {pipeline: {metric: value}} and one TREC run file per pipeline beside it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(metrics, indent=1) + "\n")
    written = [output]
    for name, run in runs.items():
        path = output.with_name(f"{output.stem}.{name}.trec")
        with open(path, "w", encoding="utf-8") as f:
            for q, docs in run.items():
                f.writelines(f"{q} Q0 {d} {i + 1} {len(docs) - i} reprank-{name}\n" for i, d in enumerate(docs))
        written.append(path)
    return written


def format_table(metrics: dict[str, dict[str, float]], info: dict) -> str:
    lines = [f"{info['dataset']} ({info['split']}, {info['queries']} queries, collection {info['collection']})",
             f"{'pipeline':<26}" + "".join(f"{m:>12}" for m in MEASURES)]
    lines += [f"{p:<26}" + "".join(f"{v[m]:>12.4f}" for m in MEASURES) for p, v in metrics.items()]
    lines += [f"{p}: p50 {b['p50_ms']} ms, p95 {b['p95_ms']} ms, {b['mean_reranked']} reranked on average, "
              f"{b['over_budget_10pct']:.1%} over budget + 10 %" for p, b in info.get("budgets", {}).items()]
    lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in info["seconds"].items()))
    return "\n".join(lines)
