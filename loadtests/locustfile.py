"""Locust scenarios for reprank; every request is also recorded raw for the SLO report (report.py).

Users: SearchRerankUser, SearchUser (no rerank), EmbeddingsUser, RerankUser, RagMixUser (a mix
close to RAG traffic: mostly searches, some with rerank, plus passage embeddings and direct reranks).
Sizes come from the environment so that a slow CPU model still gives meaningful numbers:
LOADTEST_CANDIDATES (reranked per search, default 5), LOADTEST_RERANK_DOCS (5), LOADTEST_EMBED_BATCH (4),
LOADTEST_USER_RPS (per-user request rate; 0: each user sends its next request as soon as it has an
answer), LOADTEST_API_KEY, LOADTEST_REQUEST_TIMEOUT (sent as X-Request-Timeout), LOADTEST_RECORD (CSV).
"""

from __future__ import annotations

import csv
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
        _record["writer"].writerow(["t", "endpoint", "status", "ms", "retry_after", "error"])


@events.request.add_listener
def _on_request(name, response_time, response=None, exception=None, **_kw) -> None:
    if _record["writer"] is None:
        return
    status = getattr(response, "status_code", 0) or 0
    retry = response.headers.get("retry-after", "") if response is not None and status else ""
    error = getattr(response, "error", None) if not status else None  # what a failed connection raised
    _record["writer"].writerow([f"{time.time():.3f}", name, status, f"{response_time:.1f}", retry,
                                repr(error)[:200] if error else ""])


@events.quitting.add_listener
def _close_record(**_kw) -> None:
    if _record["file"]:
        _record["file"].close()


class _Reprank(HttpUser):
    abstract = True
    wait_time = constant_throughput(USER_RPS) if USER_RPS else constant(0)

    def _post(self, name: str, path: str, payload: dict) -> None:
        with self.client.post(path, json=payload, headers=HEADERS, name=name, timeout=300,
                              catch_response=True) as r:
            if r.status_code == 200:
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
