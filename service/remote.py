"""Models on worker replicas (`reprank serve --role worker`, or stock vLLM servers), over HTTP.

`RemoteModel` asks a pool of replicas in the OpenAI embeddings and Cohere rerank shapes. A replica
that fails (connection refused, timeout, 429 or 5xx) is retried on the next one, with exponential
backoff between rounds; when no replica answers the request gets a 503 in the project's error body,
and the next request tries them all again, so a worker that comes back is used without restarting
the gateway. A worker's own 4xx (413 input too long, 400 empty) is passed through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import numpy as np

from models.errors import QueueFull
from models.interfaces import Encoded, RerankCost, Scored, Side
from service.errors import ApiError
from service.metrics import Metrics
from service.schemas import ModelCard
from service.served import Task, served_names
from service.settings import Settings
from store.documents import Document, Passage

log = logging.getLogger("reprank")

PATHS = {"embedding": "/v1/embeddings", "rerank": "/v1/rerank"}
_RETRYABLE = {429, 500, 502, 503, 504}


def _error_of(r: httpx.Response) -> tuple[str, str]:
    """(message, type) of our error body, of vLLM's (the same, or flat), or the raw text."""
    try:
        data = r.json()
    except ValueError:
        return r.text[:300] or r.reason_phrase, "worker_error"
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"]), str(err.get("type") or "worker_error")
    return str(data)[:300], "worker_error"


_TOO_LONG = ("context length",)  # vLLM: "This model's maximum context length is ..." (renderers/params.py)


def _status_of(status: int, message: str) -> int:
    """A stock vLLM worker answers an over-long input with 400; reprank's own answer (and its workers')
    is 413, so a client sees the same status whichever engine is behind the gateway."""
    return 413 if status == 400 and any(m in message.lower() for m in _TOO_LONG) else status


class ReplicaPool:
    """Worker replicas of one task behind one pooled async HTTP client.

    Each call starts at the next replica (round robin) and walks the list; a round that fails
    everywhere waits `backoff * 2**round` and tries again, up to `retries` extra rounds.
    """

    def __init__(self, task: Task, urls: list[str], settings: Settings, metrics: Metrics):
        if not urls:
            raise ValueError(f"no {task} worker URLs given")
        self.task, self.urls, self.metrics = task, [u.rstrip("/") for u in urls], metrics
        self.retries, self.backoff = settings.worker_retries, settings.worker_backoff_s
        self._next = 0
        timeout = httpx.Timeout(settings.worker_timeout_s, connect=min(settings.worker_timeout_s, 5.0))
        limits = httpx.Limits(max_connections=settings.worker_max_connections,
                              max_keepalive_connections=settings.worker_max_connections)
        self.client = httpx.AsyncClient(timeout=timeout, limits=limits, headers=_auth(settings))

    def _order(self) -> list[str]:
        start, self._next = self._next, (self._next + 1) % len(self.urls)
        return self.urls[start:] + self.urls[:start]

    async def request(self, method: str, path: str, payload: dict | None = None) -> dict:
        problems: list[str] = []
        overloaded = False
        for round_ in range(self.retries + 1):
            if round_:
                await asyncio.sleep(self.backoff * 2 ** (round_ - 1))
            for url in self._order():
                start = time.perf_counter()
                try:
                    r = await self.client.request(method, url + path, json=payload)
                except httpx.TransportError as e:
                    self._failed(url, type(e).__name__, problems)
                    continue
                finally:
                    self.metrics.worker_seconds.labels(self.task).observe(time.perf_counter() - start)
                if r.status_code < 400:
                    return r.json()
                if r.status_code not in _RETRYABLE:  # the request's own fault: the same everywhere
                    message, kind = _error_of(r)
                    raise ApiError(_status_of(r.status_code, message), message, kind)
                overloaded = overloaded or r.status_code == 429
                self._failed(url, str(r.status_code), problems, _error_of(r)[0])
        if overloaded and all("429" in p for p in problems):  # as a local batcher says it: a search degrades
            raise QueueFull(f"every {self.task} worker is overloaded")
        raise ApiError(503, f"no {self.task} worker answered ({len(self.urls)} replicas, "
                       f"{self.retries + 1} rounds): {'; '.join(problems[-len(self.urls):])}",
                       "unavailable", {"Retry-After": "1"})

    def _failed(self, url: str, reason: str, problems: list[str], detail: str = "") -> None:
        self.metrics.worker_failures.labels(self.task, reason).inc()
        problems.append(f"{url}: {reason}{' ' + detail[:120] if detail else ''}")

    async def close(self) -> None:
        await self.client.aclose()


def _auth(settings: Settings) -> dict:
    key = settings.worker_api_key
    return {"Authorization": f"Bearer {key}"} if key else {}


class RemoteModel:
    """One model served by worker replicas; `start()` learns its card from their /v1/models."""

    def __init__(self, task: Task, urls: list[str], settings: Settings, metrics: Metrics):
        self.task, self.settings, self.metrics = task, settings, metrics
        self.pool = ReplicaPool(task, urls, settings, metrics)
        self._card: ModelCard | None = None
        self.model_id = ""
        self.names: set[str] = set()

    def passages(self, doc: Document, settings: Settings) -> list[Passage]:
        """One passage: the gateway has no tokenizer to split by, so a document over the worker's window
        is refused (413) by the worker, never cut silently."""
        return [Passage(doc)]

    async def start(self, wait: float = 1.0) -> None:
        """Ask the replicas for their model card until one answers (the gateway is not ready before)."""
        while True:
            try:
                listing = await self.pool.request("GET", "/v1/models")
                break
            except ApiError as e:
                log.info("waiting for %s workers: %s", self.task, e.message)
                await asyncio.sleep(wait)
        cards = listing.get("data") or []
        mine = [c for c in cards if c.get("task") == self.task] or cards  # vLLM's cards name no task
        if not mine:
            raise ApiError(503, f"the {self.task} workers serve no model", "unavailable")
        c = mine[0]
        self._card = ModelCard(id=c["id"], task=self.task, preset=c.get("preset", "remote"),
                               source=c.get("source", self.pool.urls[0]), revision=c.get("revision"),
                               dimensions=c.get("dimensions"), dtype=c.get("dtype"),
                               max_length=c.get("max_length") or c.get("max_model_len") or 0)
        self.model_id = c["id"]
        self.names = served_names(c["id"], self._card.preset)

    def card(self) -> ModelCard:
        assert self._card is not None, "start() first"
        return self._card

    async def cost(self, query: str, documents: list[str], truncate: bool) -> RerankCost | None:
        """Unknown here (the workers hold the queues and the rates): a budgeted search through a gateway is
        cut at its budget instead (search/budget.py)."""
        return None

    async def embed(self, texts: list[str], side: Side, truncate: bool) -> Encoded:
        s = self.settings
        fmt = s.remote_query_format if side == "query" else s.remote_passage_format
        payload: dict[str, Any] = {"model": self.model_id, "truncate": truncate}
        if fmt:  # a vLLM worker: the prompt template is the client's job
            payload["input"] = [fmt.format(text=t) for t in texts]
        else:
            payload |= {"input": texts, "input_type": side}
        body = await self.pool.request("POST", PATHS["embedding"], payload)
        rows = sorted(body["data"], key=lambda d: d["index"])
        vectors = np.asarray([d["embedding"] for d in rows], dtype=np.float32)
        usage = body.get("usage") or {}
        return Encoded(vectors.reshape(len(rows), -1), usage.get("prompt_tokens", 0),
                       usage.get("truncated_tokens", 0))

    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        s = self.settings
        q = s.remote_rerank_query_format.format(query=query) if s.remote_rerank_query_format else query
        docs = ([s.remote_rerank_document_format.format(document=d) for d in documents]
                if s.remote_rerank_document_format else documents)
        body = await self.pool.request("POST", PATHS["rerank"], {
            "model": self.model_id, "query": q, "documents": docs, "top_n": len(docs), "truncate": truncate})
        scores = [0.0] * len(documents)
        for r in body["results"]:
            scores[r["index"]] = float(r["relevance_score"])
        usage = body.get("usage") or {}
        return Scored(scores, usage.get("prompt_tokens", usage.get("total_tokens", 0)),  # relevance: in [0, 1]
                      usage.get("truncated_tokens", 0))

    async def aclose(self) -> None:
        await self.pool.close()
