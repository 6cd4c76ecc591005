"""Gateway + encoder worker + reranker worker as real `reprank serve` processes on 127.0.0.1.

A search through the gateway equals the single-process (`--role all`) answer; a dead replica in the
list is skipped; a killed or hung worker gives a 503 (project error body) within the timeout, and the
gateway recovers, without a restart, once the worker is back.
"""

from __future__ import annotations

import shutil
import signal
import time

import httpx
import pytest
from helpers import Server, assert_error, free_port, indexed_data, post

TIMEOUT_S = 3.0  # the gateway's per-attempt worker timeout
# dense retrieval: Qdrant's hybrid RRF gives tied scores whose order can differ between two stores
QUERY = {"query": "library for parsing", "top_k": 5, "candidates": 12, "hybrid": False}


@pytest.fixture(scope="module")
def data_dirs(tiny_llama, tmp_path_factory):
    """Two copies of one indexed store: an embedded collection opens in one process at a time."""
    data = indexed_data(tiny_llama, tmp_path_factory)
    copy = tmp_path_factory.mktemp("gw-data-copy") / "d"
    shutil.copytree(data, copy)
    return data, copy


def encoder_args(model) -> list[str]:
    return ["--role", "worker", "--model", str(model), "--model-preset", "smollm2", "--reranker", "none"]


def reranker_args(model) -> list[str]:
    return ["--role", "worker", "--model", "none", "--reranker", str(model), "--reranker-preset",
            "smollm2-reranker"]


@pytest.fixture(scope="module")
def single_answer(tiny_llama, data_dirs):
    srv = Server(["--data-dir", str(data_dirs[1]), "--collection", "docs", "--model", str(tiny_llama),
                  "--model-preset", "smollm2", "--reranker", str(tiny_llama), "--reranker-preset",
                  "smollm2-reranker"])
    try:
        r = post(srv, "/v1/search", QUERY)
        assert r.status_code == 200, r.text
        return r.json()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cluster(tiny_llama, data_dirs):
    enc = Server(encoder_args(tiny_llama))
    rr = Server(reranker_args(tiny_llama))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every call through it must fail over
    gw = Server(["--role", "gateway", "--data-dir", str(data_dirs[0]), "--collection", "docs",
                 "--encoder-url", f"{dead},{enc.url}", "--reranker-url", rr.url,
                 "--worker-timeout", str(TIMEOUT_S)],
                env={"REPRANK_WORKER_RETRIES": "1", "REPRANK_WORKER_BACKOFF_S": "0.1"})
    procs = {"encoder": enc, "reranker": rr, "gateway": gw}
    yield procs
    for p in procs.values():
        p.stop()


def same_results(a: dict, b: dict) -> None:
    assert [h["id"] for h in a["results"]] == [h["id"] for h in b["results"]]
    for x, y in zip(a["results"], b["results"], strict=True):
        assert x["retrieval_score"] == pytest.approx(y["retrieval_score"], abs=1e-5)
        assert x["rerank_score"] == pytest.approx(y["rerank_score"], abs=1e-5)


def test_gateway_search_equals_single_process(cluster, single_answer):
    gw = cluster["gateway"]
    for _ in range(2):  # round robin: one of the two starts at the dead encoder replica
        r = post(gw, "/v1/search", QUERY)
        assert r.status_code == 200, r.text
        assert r.json()["reranked"]
        same_results(r.json(), single_answer)
    cards = httpx.get(gw.url + "/v1/models").json()["data"]
    assert [c["task"] for c in cards] == ["embedding", "rerank"] and cards[0]["dimensions"] == 64
    emb = post(gw, "/v1/embeddings", {"input": ["a", "b"], "input_type": "query"}).json()
    direct = post(cluster["encoder"], "/v1/embeddings", {"input": ["a", "b"], "input_type": "query"}).json()
    assert [d["embedding"] for d in emb["data"]] == [d["embedding"] for d in direct["data"]]
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'reprank_worker_failures_total{reason="ConnectError",task="embedding"}' in metrics


def test_budgets_through_the_gateway(cluster, single_answer):
    """The gateway cannot estimate its workers' queues: a budget too short for the query's embedding
    answers from BM25, a loose one reranks everything, as the single process does."""
    gw = cluster["gateway"]
    tight = post(gw, "/v1/search", {**QUERY, "hybrid": True, "budget_ms": 1})
    assert tight.status_code == 200, tight.text
    assert tight.json()["usage"]["retrieval"] == "bm25" and tight.json()["usage"]["reranked"] == 0
    loose = post(gw, "/v1/search", {**QUERY, "budget_ms": 60_000})
    assert loose.json()["usage"]["rerank_limited_by"] is None
    same_results(loose.json(), single_answer)


def test_worker_errors_pass_through_and_workers_serve_no_search(cluster):
    gw, enc = cluster["gateway"], cluster["encoder"]
    assert_error(post(gw, "/v1/embeddings", {"input": "x " * 2000}), 413)  # the worker's own 413
    assert_error(post(enc, "/v1/search", QUERY), 404)
    assert_error(post(enc, "/v1/rerank", {"query": "q", "documents": ["d"]}), 400)


def test_killed_worker_gives_503_then_recovers(cluster, tiny_llama, single_answer):
    gw, enc = cluster["gateway"], cluster["encoder"]
    enc.proc.send_signal(signal.SIGKILL)
    enc.proc.wait(10)
    start = time.monotonic()
    r = post(gw, "/v1/search", QUERY)
    assert time.monotonic() - start < TIMEOUT_S
    assert "no embedding worker answered" in assert_error(r, 503)["message"]
    assert_error(post(gw, "/v1/embeddings", {"input": "x"}), 503)
    assert httpx.get(gw.url + "/readyz").status_code == 200  # the gateway itself stays up and ready

    enc.stop()
    cluster["encoder"] = Server(encoder_args(tiny_llama), port=enc.port)  # back on the same address
    r = post(gw, "/v1/search", QUERY)
    assert r.status_code == 200, r.text
    same_results(r.json(), single_answer)


def test_hung_worker_times_out_with_503_then_recovers(cluster, single_answer):
    gw, rr = cluster["gateway"], cluster["reranker"]
    rr.proc.send_signal(signal.SIGSTOP)  # accepts connections (the kernel does) but never answers
    try:
        start = time.monotonic()
        r = post(gw, "/v1/search", QUERY)
        elapsed = time.monotonic() - start
        assert "no rerank worker answered" in assert_error(r, 503)["message"]
        assert TIMEOUT_S <= elapsed < 2 * TIMEOUT_S + 3  # two rounds of one attempt, plus the backoff
    finally:
        rr.proc.send_signal(signal.SIGCONT)
    r = post(gw, "/v1/search", QUERY)
    assert r.status_code == 200, r.text
    same_results(r.json(), single_answer)
