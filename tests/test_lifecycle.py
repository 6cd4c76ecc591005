"""Deadlines, dropped work and graceful shutdown, on the real server (`reprank serve` subprocess).

A rerank of long documents, sized from a timed sample to keep the tiny model's batcher busy for
some seconds whatever the machine's speed, shows by what is queued behind it whether a request
whose deadline passes or whose client leaves is dropped before it reaches the model
(reprank_dropped_total), and what SIGTERM does to a request in flight.
"""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import Server, assert_error, post, tiny_model_args

LONG_DOC = "tokens and more tokens " * 100  # ~460 tokens
ENV = {"REPRANK_MAX_DOCUMENTS": "20000", "REPRANK_MAX_QUEUE_TOKENS": "50000000",
       "REPRANK_MAX_BODY_BYTES": "100000000",
       "REPRANK_DEADLINE_ADMISSION": "false",  # these tests run work into its deadline: no refusal up front
       "REPRANK_RERANK_CACHE_MB": "0", "REPRANK_EMBEDDING_CACHE_MB": "0"}  # and time repeated texts: no caches


def start(tiny_llama, tmp_path, **env) -> Server:
    return Server(["--data-dir", str(tmp_path), *tiny_model_args(tiny_llama)], {**ENV, **env})


def slow_rerank(server: Server, n: int):
    return httpx.post(server.url + "/v1/rerank", json={"query": "q", "documents": [LONG_DOC] * n}, timeout=600)


def metric_sum(server: Server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def docs_for(server: Server, seconds: float) -> int:
    """How many LONG_DOCs one rerank needs to take about `seconds` on this machine, now."""
    t0 = time.perf_counter()
    assert slow_rerank(server, 50).status_code == 200
    return max(50, min(20_000, round(50 * seconds / (time.perf_counter() - t0))))


def busy(server: Server, pool: ThreadPoolExecutor, seconds: float):
    """Start a rerank that takes about `seconds`; return its future once its first batch has run."""
    n = docs_for(server, seconds)
    before = metric_sum(server, "reprank_batch_size_count")
    future = pool.submit(slow_rerank, server, n)
    deadline = time.time() + 60
    while metric_sum(server, "reprank_batch_size_count") <= before:
        assert time.time() < deadline and not future.done(), "the slow request never started"
        time.sleep(0.05)
    return future


def wait_for(check, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    srv = start(tiny_llama, tmp_path_factory.mktemp("data"))
    yield srv
    srv.stop()


def test_deadline_passes_504_and_the_work_is_dropped(server):
    dropped = metric_sum(server, "reprank_dropped_total")
    with ThreadPoolExecutor(1) as pool:
        slow = busy(server, pool, 5)
        t0 = time.perf_counter()
        r = post(server, "/v1/rerank", {"query": "q", "documents": ["a", "b", "c"]},
                 headers={"X-Request-Timeout": "0.5"})
        waited = time.perf_counter() - t0
        err = assert_error(r, 504)
        assert "deadline" in err["message"] and 0.4 < waited < 10, waited
        assert not slow.done()
        assert slow.result().status_code == 200
    wait_for(lambda: metric_sum(server, "reprank_dropped_total") >= dropped + 3)
    assert 'reprank_errors_total{route="/v1/rerank",status="504"}' in httpx.get(server.url + "/metrics").text


def test_disconnected_client_work_is_dropped(server):
    dropped = metric_sum(server, "reprank_dropped_total")
    with ThreadPoolExecutor(1) as pool:
        slow = busy(server, pool, 5)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(server.url + "/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=0.5)
        assert not slow.done()
        assert slow.result().status_code == 200
    wait_for(lambda: metric_sum(server, "reprank_dropped_total") >= dropped + 2)
    wait_for(lambda: "client disconnected" in server.output())


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
def test_bad_timeout_header_is_422(server, value):
    assert_error(post(server, "/v1/embeddings", {"input": "x"}, headers={"X-Request-Timeout": value}), 422)


def test_sigterm_drains_then_exits_0(tiny_llama, tmp_path):
    srv = start(tiny_llama, tmp_path, REPRANK_SHUTDOWN_DELAY="2")
    try:
        with ThreadPoolExecutor(1) as pool:
            slow = busy(srv, pool, 12)
            srv.proc.send_signal(signal.SIGTERM)
            ready = httpx.get(srv.url + "/readyz", timeout=10)
            assert ready.status_code == 503 and "draining" in ready.json()["error"]["message"]
            assert httpx.get(srv.url + "/healthz").status_code == 200  # still serving during the delay
            time.sleep(3)
            with pytest.raises(httpx.ConnectError):  # then new connections are refused
                httpx.get(srv.url + "/healthz", timeout=5)
            assert not slow.done(), "the in-flight request should outlast the drain delay"
            assert slow.result().status_code == 200  # ... and still completes
        assert srv.proc.wait(60) == 0
        assert "Waiting for connections to close" in srv.output() or "Shutting down" in srv.output()
    finally:
        srv.stop()
