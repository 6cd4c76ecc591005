"""`reprank eval`: nDCG@10, MRR@10 and Recall@100 of the real retrieval pipelines on a BEIR dataset.

The corpus is indexed with the current encoder (index_corpus: a complete collection is reused, a
partial one finished). Each query of the split then runs through the store and the reranker as
served: `bm25` (store.query_bm25, the same-run lexical baseline), `dense` (store.query), `hybrid`
(store.query with hybrid_text: Qdrant's RRF fusion of dense and BM25), and `dense+rerank` /
`hybrid+rerank` (the Reranker rescoring the top --rerank-depth candidates; the rest keep their order
below them, so Recall@100 is the first stage's), and `dense+rerank+rrf` / `hybrid+rerank+rrf` (the
same scores fused with the retrieval ranks, as /v1/search orders them with rerank_fusion "rrf").
Metrics come from ir-measures (pytrec_eval); a query that retrieves nothing is scored 0, never
dropped from the mean.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ir_measures
from ir_measures import RR, R, nDCG
from tqdm import tqdm

from indexer.corpus import count_documents, read_corpus, read_qrels, read_queries
from indexer.run import derived_collection, encode_queries, index_corpus, passage_text
from indexer.store import Document, Hit, VectorStore
from models.reranker import final_scores

PIPELINES = ("bm25", "dense", "hybrid", "dense+rerank", "hybrid+rerank",
             "dense+rerank+rrf", "hybrid+rerank+rrf")
MEASURES = {"ndcg@10": nDCG @ 10, "mrr@10": RR @ 10, "recall@100": R @ 100}
_NOTHING = "__no_result__"  # stands in for an empty result list so the query still counts as 0

Run = dict[str, list[str]]  # query id -> doc ids, best first


def evaluate(dataset: str | Path, split: str, encoder, reranker, store: VectorStore, *,
             collection: str | None = None, pipelines: tuple[str, ...] = PIPELINES,
             max_queries: int | None = None, candidates: int = 100, rerank_depth: int = 20,
             progress: bool = True) -> tuple[dict[str, dict[str, float]], dict[str, Run], dict]:
    """(metrics per pipeline, runs per pipeline, info: collection, query count, seconds per stage)."""
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

    timings: dict[str, float] = {}
    began = time.perf_counter()
    collection = collection or derived_collection("eval", dataset, encoder)
    index_corpus(read_corpus(dataset), encoder, store, collection, total=count_documents(dataset),
                 progress=progress)
    timings["index"] = time.perf_counter() - began

    began = time.perf_counter()
    vectors = encode_queries(encoder, [queries[q] for q in qids])
    timings["encode_queries"] = time.perf_counter() - began
    runs: dict[str, Run] = {p: {} for p in pipelines}
    search = rerank = 0.0
    for q, vector in zip(tqdm(qids, desc=f"eval {split}", unit="query", disable=not progress), vectors,
                         strict=True):
        text = queries[q]
        began = time.perf_counter()
        first: dict[str, list[Hit]] = {}
        if "bm25" in pipelines:
            first["bm25"] = store.query_bm25(collection, text, candidates)
        if any(p.startswith("dense") for p in pipelines):
            first["dense"] = store.query(collection, vector, candidates)
        if any(p.startswith("hybrid") for p in pipelines):
            first["hybrid"] = store.query(collection, vector, candidates, hybrid_text=text)
        search += time.perf_counter() - began
        for name, hits in first.items():
            if name in runs:
                runs[name][q] = [h.doc_id for h in hits]
        began = time.perf_counter()
        reranked = [p for p in pipelines if "+rerank" in p]
        scores = _rerank_scores(reranker, text, [first[p.split("+")[0]][:rerank_depth] for p in reranked])
        for p in reranked:
            ids = [h.doc_id for h in first[p.split("+")[0]]]
            head = ids[:rerank_depth]
            final = final_scores([scores[d] for d in head], "rrf" if p.endswith("+rrf") else "none")
            top = sorted(range(len(head)), key=lambda i: -final[i])  # stable: ties keep retrieval order
            runs[p][q] = [head[i] for i in top] + ids[rerank_depth:]
        rerank += time.perf_counter() - began
    timings.update(search=search, rerank=rerank)
    metrics = {p: score_run(runs[p], qrels) for p in pipelines}
    info = {"dataset": str(dataset), "split": split, "queries": len(qids), "collection": collection,
            "seconds": {k: round(v, 1) for k, v in timings.items()}}
    return metrics, runs, info


def _rerank_scores(reranker, query: str, lists: list[list[Hit]]) -> dict[str, float]:
    """Rerank scores of the union of the candidate lists: a document in both lists is scored once."""
    docs = {h.doc_id: h for hits in lists for h in hits}
    if not docs:
        return {}
    texts = [passage_text(Document(h.doc_id, h.payload.get("text", ""), h.payload.get("title", "")))
             for h in docs.values()]
    return dict(zip(docs, reranker.score(query, texts, truncate=True).scores, strict=True))


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
             f"{'pipeline':<18}" + "".join(f"{m:>12}" for m in MEASURES)]
    lines += [f"{p:<18}" + "".join(f"{v[m]:>12.4f}" for m in MEASURES) for p, v in metrics.items()]
    lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in info["seconds"].items()))
    return "\n".join(lines)
