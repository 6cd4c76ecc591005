"""Locust scenarios for reprank; every request is also recorded raw for the SLO report (report.py).

Users: SearchRerankUser, SearchUser (no rerank), EmbeddingsUser, RerankUser, RagMixUser (a mix
close to RAG traffic: mostly searches, some with rerank, plus passage embeddings and direct reranks),
ZipfBudgetUser (reranked searches with a latency budget: queries drawn from a Zipf law over the sample
queries, so a few repeat often and hit the result caches; each request picks a budget class).
Sizes come from the environment so that a slow CPU model still gives meaningful numbers:
LOADTEST_CANDIDATES (reranked per search, default 5), LOADTEST_RERANK_DOCS (5), LOADTEST_EMBED_BATCH (4),
LOADTEST_USER_RPS (per-user request rate; 0: each user sends its next request as soon as it has an
answer), LOADTEST_API_KEY, LOADTEST_REQUEST_TIMEOUT (sent as X-Request-Timeout), LOADTEST_RECORD (CSV).
ZipfBudgetUser: LOADTEST_ZIPF_S (the Zipf exponent, 1.1), LOADTEST_ZIPF_RANKS (10000: ranks past the
100 sample queries are new texts, a sample query with its rank appended: the long tail), LOADTEST_BUDGETS (budget classes in ms,
"300,1000,3000"), LOADTEST_SEED (1; user i draws from its own generator seeded by (seed, i)).

The CSV has a row per request: t, endpoint, status, ms, retry_after, error, and for budgeted searches
(empty otherwise) budget_ms, query (the query's Zipf rank, 0 the most frequent), reranked and limited_by
(the answer's usage) and server_ms (its timings_ms.total).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import time
from pathlib import Path

from locust import HttpUser, constant, constant_throughput, events, task

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "debian-1k"
CANDIDATES = int(os.environ.get("LOADTEST_CANDIDATES", "5"))
RERANK_DOCS = int(os.environ.get("LOADTEST_RERANK_DOCS", "5"))
EMBED_BATCH = int(os.environ.get("LOADTEST_EMBED_BATCH", "4"))
USER_RPS = float(os.environ.get("LOADTEST_USER_RPS", "0"))
COLLECTION = os.environ.get("LOADTEST_COLLECTION")
ZIPF_S = float(os.environ.get("LOADTEST_ZIPF_S", "1.1"))
ZIPF_RANKS = int(os.environ.get("LOADTEST_ZIPF_RANKS", "10000"))  # ranks past the sample queries are new texts
BUDGETS = [float(b) for b in os.environ.get("LOADTEST_BUDGETS", "300,1000,3000").split(",") if b.strip()]
SEED = int(os.environ.get("LOADTEST_SEED", "1"))
COLUMNS = ["t", "endpoint", "status", "ms", "retry_after", "error",
           "budget_ms", "query", "reranked", "limited_by", "server_ms"]
EXTRA = COLUMNS[6:]  # recorded from a request's context: what ZipfBudgetUser sets, empty for the others


def _read(name: str, field: str, limit: int) -> list[str]:
    with open(SAMPLES / name) as f:
        return [json.loads(line)[field][:600] for _, line in zip(range(limit), f, strict=False)]


QUERIES = _read("queries.jsonl", "text", 100)
PASSAGES = _read("corpus.jsonl", "text", 200)
HEADERS = {}
if os.environ.get("LOADTEST_API_KEY"):
    HEADERS["Authorization"] = f"Bearer {os.environ['LOADTEST_API_KEY']}"
if os.environ.get("LOADTEST_REQUEST_TIMEOUT"):
    HEADERS["X-Request-Timeout"] = os.environ["LOADTEST_REQUEST_TIMEOUT"]

_record = {"file": None, "writer": None}


@events.test_start.add_listener
def _open_record(**_kw) -> None:
    path = os.environ.get("LOADTEST_RECORD")
    if path:
        _record["file"] = open(path, "w", newline="")
        _record["writer"] = csv.writer(_record["file"])
        _record["writer"].writerow(COLUMNS)


@events.request.add_listener
def _on_request(name, response_time, response=None, exception=None, context=None, **_kw) -> None:
    if _record["writer"] is None:
        return
    status = getattr(response, "status_code", 0) or 0
    retry = response.headers.get("retry-after", "") if response is not None and status else ""
    error = getattr(response, "error", None) if not status else None  # what a failed connection raised
    extra = ["" if (v := (context or {}).get(k)) is None else v for k in EXTRA]
    _record["writer"].writerow([f"{time.time():.3f}", name, status, f"{response_time:.1f}", retry,
                                repr(error)[:200] if error else "", *extra])


@events.quitting.add_listener
def _close_record(**_kw) -> None:
    if _record["file"]:
        _record["file"].close()


class _Reprank(HttpUser):
    abstract = True
    wait_time = constant_throughput(USER_RPS) if USER_RPS else constant(0)

    def _post(self, name: str, path: str, payload: dict, context: dict | None = None) -> None:
        with self.client.post(path, json=payload, headers=HEADERS, name=name, timeout=300,
                              catch_response=True, context=context or {}) as r:
            if r.status_code == 200:
                if context is not None:  # the answer's figures go to the record (see _on_request)
                    _note_search(r)
                r.success()
            else:
                r.failure(f"HTTP {r.status_code}" if r.status_code else f"no answer: {r.error!r}"[:200])

    def _search(self, rerank: bool) -> None:
        body = {"query": random.choice(QUERIES), "top_k": min(5, CANDIDATES), "candidates": CANDIDATES,
                "rerank": rerank}
        if COLLECTION:
            body["collection"] = COLLECTION
        self._post("search+rerank" if rerank else "search", "/v1/search", body)

    def search_rerank(self) -> None:
        self._search(True)

    def search(self) -> None:
        self._search(False)

    def embeddings(self) -> None:
        self._post("embeddings", "/v1/embeddings",
                   {"input": random.sample(PASSAGES, EMBED_BATCH), "input_type": "passage"})

    def rerank(self) -> None:
        self._post("rerank", "/v1/rerank",
                   {"query": random.choice(QUERIES), "documents": random.sample(PASSAGES, RERANK_DOCS)})


class SearchRerankUser(_Reprank):
    @task
    def go(self) -> None:
        self.search_rerank()


class SearchUser(_Reprank):
    @task
    def go(self) -> None:
        self.search()


class EmbeddingsUser(_Reprank):
    @task
    def go(self) -> None:
        self.embeddings()


class RerankUser(_Reprank):
    @task
    def go(self) -> None:
        self.rerank()


class RagMixUser(_Reprank):
    """Per 10 requests: 5 plain searches, 2 searches with rerank, 2 embedding batches, 1 direct rerank."""

    tasks = {_Reprank.search: 5, _Reprank.search_rerank: 2, _Reprank.embeddings: 2, _Reprank.rerank: 1}


def _note_search(r) -> None:
    """A search answer's usage and server time, into the context its request event carries."""
    meta = getattr(r, "request_meta", None)
    try:
        body = r.json()
    except ValueError:
        return
    if meta is not None:
        usage = body.get("usage") or {}
        meta["context"].update(reranked=usage.get("reranked"), limited_by=usage.get("rerank_limited_by"),
                               server_ms=(body.get("timings_ms") or {}).get("total"))


def zipf_cum_weights(n: int, s: float) -> list[float]:
    """Cumulative weights of ranks 0..n-1 under Zipf's law with exponent s (P(rank k) ~ 1/(k+1)^s)."""
    return list(itertools.accumulate(1 / (k + 1) ** s for k in range(n)))


class ZipfBudgetUser(_Reprank):
    """Reranked searches like RAG traffic: Zipf-distributed queries (rank = order in queries.jsonl), each
    with a budget class sent as budget_ms; endpoint named per class ("search budget=300ms")."""

    _users = itertools.count()  # users of this process in spawn order: user i is seeded by (SEED, i)
    _cum = zipf_cum_weights(max(ZIPF_RANKS, len(QUERIES)), ZIPF_S)

    def on_start(self) -> None:
        self.rng = random.Random(f"{SEED}-{next(self._users)}")

    @task
    def go(self) -> None:
        rank = self.rng.choices(range(len(self._cum)), cum_weights=self._cum)[0]
        query = QUERIES[rank] if rank < len(QUERIES) else f"{QUERIES[rank % len(QUERIES)]} ({rank})"  # the long tail
        budget = self.rng.choice(BUDGETS)
        body = {"query": query, "top_k": min(5, CANDIDATES), "candidates": CANDIDATES, "rerank": True,
                "budget_ms": budget}
        if COLLECTION:
            body["collection"] = COLLECTION
        self._post(f"search budget={budget:g}ms", "/v1/search", body, {"budget_ms": f"{budget:g}", "query": rank})
