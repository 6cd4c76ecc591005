"""RemoteModel against a stand-in for a vLLM server (vLLM itself needs a GPU): the request shapes the
gateway sends when it applies the prompt templates itself, the vLLM answer shapes it reads, and how
a pool of replicas turns 429s and 5xxs into one status. The stand-ins speak HTTP through httpx's
ASGI transport (a router picks the replica); tests/test_gateway.py has real workers over sockets."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from models.errors import QueueFull
from service.errors import as_api_error
from service.metrics import Metrics
from service.remote import RemoteModel
from service.settings import Settings

VLLM_FORMATS = dict(remote_query_format="query: {text}</s>", remote_passage_format="passage: {text}</s>",
                    remote_rerank_query_format="query: {query}", remote_rerank_document_format="document: {document}")


def vllm_like(seen: list, status: int = 200) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "repllama-merged", "object": "model", "max_model_len": 4096}]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await request.json()
        seen.append(body)
        if status != 200:
            return JSONResponse({"object": "error", "message": "busy", "type": "Overloaded", "code": status}, status)
        data = [{"index": i, "object": "embedding", "embedding": [float(len(t)), 1.0]}
                for i, t in reversed(list(enumerate(body["input"])))]  # any order: the client sorts by index
        return {"object": "list", "data": data, "usage": {"prompt_tokens": 7, "total_tokens": 7}}

    @app.post("/v1/rerank")
    async def rerank(request: Request):
        body = await request.json()
        seen.append(body)
        ranked = sorted(range(len(body["documents"])), key=lambda i: -len(body["documents"][i]))
        return {"results": [{"index": i, "relevance_score": float(len(body["documents"][i]))} for i in ranked],
                "usage": {"total_tokens": 11}}

    return app


def remote(task: str, apps: dict[str, FastAPI], **settings) -> RemoteModel:
    s = Settings(worker_retries=1, worker_backoff_s=0.01, **settings)
    model = RemoteModel(task, list(apps), s, Metrics())

    async def route(request: httpx.Request) -> httpx.Response:
        app = apps[f"{request.url.scheme}://{request.url.host}"]
        return await httpx.ASGITransport(app=app).handle_async_request(request)

    model.pool.client = httpx.AsyncClient(transport=httpx.MockTransport(route))
    return model


def test_vllm_shapes_with_client_side_templates():
    seen: list = []

    async def go():
        enc = remote("embedding", {"http://vllm": vllm_like(seen)}, **VLLM_FORMATS)
        await enc.start()
        card = enc.card()
        out = await enc.embed(["hi", "there"], "query", True)
        rr = remote("rerank", {"http://vllm": vllm_like(seen)}, **VLLM_FORMATS)
        await rr.start()
        scored = await rr.rerank("q", ["short", "a longer one"], True)
        return card, out, scored

    card, out, scored = asyncio.run(go())
    assert (card.id, card.task, card.max_length, card.dimensions) == ("repllama-merged", "embedding", 4096, None)
    assert seen[0] == {"model": "repllama-merged", "truncate": True, "input": ["query: hi</s>", "query: there</s>"]}
    assert out.vectors.tolist() == [[13.0, 1.0], [16.0, 1.0]] and out.tokens == 7 and out.truncated_tokens == 0
    assert seen[1]["query"] == "query: q" and seen[1]["documents"] == ["document: short", "document: a longer one"]
    assert seen[1]["top_n"] == 2 and scored.scores == [15.0, 22.0] and scored.tokens == 11


def test_reprank_worker_shape_sends_input_type():
    seen: list = []

    async def go():
        enc = remote("embedding", {"http://w": vllm_like(seen)})
        await enc.start()
        await enc.embed(["hi"], "passage", False)

    asyncio.run(go())
    assert seen[0] == {"model": "repllama-merged", "truncate": False, "input": ["hi"], "input_type": "passage"}


def test_overloaded_everywhere_is_429_and_failover_skips_a_busy_replica():
    busy: list = []
    ok: list = []

    async def go():
        both = remote("embedding", {"http://a": vllm_like(busy, 429), "http://b": vllm_like(busy, 429)})
        with pytest.raises(QueueFull) as err:  # as a local batcher's: a budgeted search degrades on it
            await both.embed(["x"], "query", False)
        mixed = remote("embedding", {"http://a": vllm_like(busy, 503), "http://b": vllm_like(ok)})
        for _ in range(3):
            assert (await mixed.embed(["x"], "query", False)).vectors.shape == (1, 2)
        return err.value

    err = as_api_error(asyncio.run(go()))
    assert err.status == 429 and err.headers == {"Retry-After": "1"}
    assert len(busy) == 4 + 2 and len(ok) == 3  # 2 replicas x 2 rounds; then each call tried a at most once
