"""Prometheus metrics, in a registry owned by the app (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily

from models.batching import BatchStats

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEPTHS = (0, 1, 2, 5, 10, 20, 50, 100, 200)
TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("reprank_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.errors = Counter("reprank_errors", "HTTP error responses by route and status", ["route", "status"],
                              registry=r)
        self.latency = Histogram("reprank_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY, registry=r)
        self.stage = Histogram("reprank_stage_seconds", "pipeline stage latency (encode, search, rerank)",
                               ["stage"], buckets=LATENCY, registry=r)
        self.batch_size = Histogram("reprank_batch_size", "sequences per forward pass", ["model"], buckets=SIZES,
                                    registry=r)
        self.batch_tokens = Histogram("reprank_batch_tokens", "real tokens per forward pass", ["model"],
                                      buckets=TOKENS, registry=r)
        self.batch_padded = Histogram("reprank_batch_padded_tokens", "tokens incl. padding per forward pass",
                                      ["model"], buckets=TOKENS, registry=r)
        self.batch_seconds = Histogram("reprank_batch_seconds", "forward pass time", ["model"], buckets=LATENCY,
                                       registry=r)
        self.queue_depth = Gauge("reprank_queue_depth", "sequences waiting for a batch", ["model"], registry=r)
        self.queue_tokens = Gauge("reprank_queue_tokens", "tokens admitted and not finished (waiting or running)", ["model"], registry=r)
        self.queue_limit = Gauge("reprank_queue_limit_tokens", "pending tokens beyond which requests get 429",
                                 ["model"], registry=r)
        self.rejected = Counter("reprank_rejected", "requests refused because the queue was full", ["model"],
                                registry=r)
        self.truncated = Counter("reprank_truncated_tokens", "tokens cut by requested truncation", ["model"],
                                 registry=r)
        self.ready = Gauge("reprank_ready", "1 once models are loaded and warmed up", registry=r)
        self._dropped = _Dropped()
        r.register(self._dropped)
        # latency budgets (search/budget.py) and the result caches (service/cache.py)
        self.reranked = Histogram("reprank_search_reranked", "candidates reranked per search that asked for a rerank",
                                  buckets=DEPTHS, registry=r)
        self.budget_limited = Counter("reprank_search_budget_limited", "searches that reranked fewer candidates "
                                      "than planned: reason budget (the request's own time) or queue (work ahead)",
                                      ["reason"], registry=r)
        self.cache_hits = Counter("reprank_cache_hits", "items answered from a result cache", ["cache"], registry=r)
        self.cache_misses = Counter("reprank_cache_misses", "items a result cache did not hold (computed)",
                                    ["cache"], registry=r)
        self.cache_evictions = Counter("reprank_cache_evictions", "entries dropped to stay under the cache's bound",
                                       ["cache"], registry=r)
        self.cache_entries = Gauge("reprank_cache_entries", "entries held by a result cache", ["cache"], registry=r)
        self.cache_bytes = Gauge("reprank_cache_bytes", "estimated bytes held by a result cache", ["cache"],
                                 registry=r)
        self.cache_limit = Gauge("reprank_cache_limit_bytes", "a result cache's bound", ["cache"], registry=r)
        self.worker_seconds = Histogram("reprank_worker_seconds", "gateway: one HTTP attempt to a worker",
                                        ["task"], buckets=LATENCY, registry=r)
        self.worker_failures = Counter("reprank_worker_failures", "gateway: failed attempts to a worker replica",
                                       ["task", "reason"], registry=r)

    def on_batch(self, model: str):
        def record(s: BatchStats) -> None:
            self.batch_size.labels(model).observe(s.size)
            self.batch_tokens.labels(model).observe(s.tokens)
            self.batch_padded.labels(model).observe(s.padded_tokens)
            self.batch_seconds.labels(model).observe(s.seconds)

        return record

    def watch_queue(self, model: str, batcher) -> None:
        self.queue_depth.labels(model).set_function(lambda: batcher.depth)
        self.queue_tokens.labels(model).set_function(lambda: batcher.pending_tokens)
        self.queue_limit.labels(model).set_function(lambda: batcher.max_queue_tokens)
        self._dropped.batchers[model] = batcher

    def observe_stage(self, stage: str, seconds: float) -> None:
        """One search stage (encode, search, rerank): search.core.Searcher reports each here."""
        self.stage.labels(stage).observe(seconds)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int):
        """/metrics on its own port (a thread); returns the server, to shut down with the app."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


class _Dropped:
    """reprank_dropped_total{model}: sequences cancelled (client gone, deadline passed) before they ran."""

    def __init__(self):
        self.batchers: dict = {}

    def collect(self):
        family = CounterMetricFamily("reprank_dropped", "sequences dropped before reaching the model: client "
                                     "disconnected or request deadline passed", labels=["model"])
        for model, batcher in self.batchers.items():
            family.add_metric([model], batcher.dropped)
        yield family
