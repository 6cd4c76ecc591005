"""The API's contract through the real app in this process (an ASGI client: lifespan, middlewares,
routes) over a real embedded Qdrant Edge store, with a tiny random Llama as encoder and
query-likelihood reranker, on each model engine (torch; vLLM where it is installed). Process matters
(signals, deadlines, workers) are tested over real uvicorn in test_lifecycle, test_gateway, test_faults
and test_security."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import DOCS, SECTIONS, InProcess, assert_error, get, indexed_data, post, tiny_settings
from tiny import VLLM_SHAPE, build
from transformers import AutoTokenizer

from models.loading import model_revision
from models.vllm_engine import available


@pytest.fixture(scope="module", params=["torch", pytest.param("vllm", marks=pytest.mark.skipif(
    available() is not None, reason=str(available())))])
def server(request, tiny_llama, tokenizer_dir, tmp_path_factory):
    """The same contract on each model engine (vLLM's CPU kernels need a tiny model with head_dim 64)."""
    model = tiny_llama if request.param == "torch" else build(
        tmp_path_factory.mktemp("tiny-vllm"), AutoTokenizer.from_pretrained(tokenizer_dir), **VLLM_SHAPE)
    data = indexed_data(model, tmp_path_factory)
    srv = InProcess(tiny_settings(model, data_dir=data, collection="docs", max_documents=50, max_inputs=16,
                                  max_queue_tokens=6000, engine=request.param), timeout=400)
    yield srv
    srv.stop()


def test_health_ready_models(server):
    assert get(server, "/healthz").json() == {"status": "ok"}
    assert get(server, "/readyz").status_code == 200
    models = get(server, "/v1/models").json()["data"]
    assert [m["task"] for m in models] == ["embedding", "rerank"]
    assert models[0]["dimensions"] == 64
    assert models[0]["dtype"] == str(tiny_settings(models[0]["source"]).torch_dtype()).removeprefix("torch.")
    assert models[0]["revision"] == model_revision(models[0]["source"]) != "0123456789ab"


def test_embeddings_shapes_and_formats(server):
    r = post(server, "/v1/embeddings", {"input": ["hello world", "a longer text about packages"],
                                        "input_type": "query"})
    assert r.status_code == 200, r.text
    body = r.json()
    vecs = np.array([d["embedding"] for d in body["data"]])
    assert vecs.shape == (2, 64) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert body["usage"]["prompt_tokens"] > 4 and body["object"] == "list"

    b64 = post(server, "/v1/embeddings", {"input": "hello world", "input_type": "query",
                                          "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vecs[0], atol=1e-6)
    passage = post(server, "/v1/embeddings", {"input": "hello world"}).json()["data"][0]["embedding"]
    assert not np.allclose(passage, vecs[0])  # query and passage templates differ


def test_openai_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", http_client=server.client)
    out = client.embeddings.create(model=str(server_model(server)), input=["zstd compression", "yaml parser"])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 64


def server_model(server) -> str:
    return get(server, "/v1/models").json()["data"][0]["id"]


def test_rerank_orders_scores(server):
    docs = [d.text for d in DOCS[:8]]
    r = post(server, "/v1/rerank", {"query": "parsing data", "documents": docs, "top_n": 5,
                                    "return_documents": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    scores = [x["relevance_score"] for x in results]
    assert len(results) == 5 and scores == sorted(scores, reverse=True)
    assert all(docs[x["index"]] == x["document"]["text"] for x in results)
    objs = post(server, "/v1/rerank", {"query": "parsing data", "documents": [{"text": t} for t in docs]}).json()
    assert {x["index"] for x in objs["results"]} == set(range(8)) and "document" not in objs["results"][0]


def test_search_rerank_filter_hybrid(server):
    r = post(server, "/v1/search", {"query": "library for parsing", "top_k": 5, "candidates": 12,
                                    "rerank_fusion": "none"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reranked"] and len(body["results"]) == 5
    scores = [h["rerank_score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True) and scores == [h["score"] for h in body["results"]]
    assert set(body["timings_ms"]) >= {"encode", "search", "rerank", "total"}
    assert body["results"][0]["id"].startswith("doc-") and body["results"][0]["metadata"]["section"] in SECTIONS

    # the default order: RRF of each candidate's retrieval rank and rerank rank (all 12 shown; dense
    # retrieval, whose cosine scores have no ties, so the retrieval rank can be read back from them)
    fused = post(server, "/v1/search", {"query": "library for parsing", "top_k": 12, "candidates": 12,
                                        "hybrid": False}).json()
    hits = fused["results"]
    by_retrieval = sorted(hits, key=lambda h: -h["retrieval_score"])
    by_rerank = sorted(hits, key=lambda h: -h["rerank_score"])
    for h in hits:
        expect = 1 / (61 + by_retrieval.index(h)) + 1 / (61 + by_rerank.index(h))
        assert h["score"] == pytest.approx(expect)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert_error(post(server, "/v1/search", {"query": "q", "rerank_fusion": "borda"}), 422)

    plain = post(server, "/v1/search", {"query": "library for parsing", "top_k": 30, "rerank": False}).json()
    ret = [h["retrieval_score"] for h in plain["results"]]
    assert not plain["reranked"] and len(ret) == 30 and ret == sorted(ret, reverse=True)

    filt = post(server, "/v1/search", {"query": "library", "top_k": 30, "rerank": False,
                                       "filter": {"section": "admin", "size": {"gte": 10}}}).json()
    got = {h["id"] for h in filt["results"]}
    assert got == {d.doc_id for d in DOCS if d.metadata["section"] == "admin" and d.metadata["size"] >= 10}

    hyb = post(server, "/v1/search", {"query": "pkg17", "top_k": 3, "rerank": False}).json()
    assert hyb["results"][0]["id"] == "doc-17"  # hybrid by default: the BM25 side finds the rare title word
    dense = post(server, "/v1/search", {"query": "pkg17", "top_k": 3, "rerank": False, "hybrid": False}).json()
    fused_scores = [h["retrieval_score"] for h in hyb["results"]]  # RRF values, not cosines
    assert fused_scores != [h["retrieval_score"] for h in dense["results"]]


def test_error_cases(server):
    assert_error(post(server, "/v1/search", {"query": "  "}), 400)
    assert_error(post(server, "/v1/rerank", {"query": "", "documents": ["a"]}), 400)
    assert_error(post(server, "/v1/rerank", {"query": "q", "documents": []}), 400)
    assert_error(post(server, "/v1/embeddings", {"input": []}), 400)
    assert_error(post(server, "/v1/embeddings", {"input": ["ok", ""]}), 400)
    assert_error(post(server, "/v1/search", {"query": "q", "collection": "nope"}), 404)
    stale = assert_error(post(server, "/v1/search", {"query": "q", "collection": "stale"}), 409)
    assert "revision '0123456789ab'" in stale["message"] and "re-index" in stale["message"]
    assert_error(post(server, "/v1/embeddings", {"input": "x", "model": "text-embedding-3-small"}), 404)
    assert_error(post(server, "/v1/rerank", {"query": "q", "documents": ["d"] * 51}), 413)
    assert_error(post(server, "/v1/embeddings", {"input": ["x"] * 17}), 413)
    assert_error(post(server, "/v1/search", {"query": "q", "top_k": 1000}), 413)
    long_text = "word " * 3000
    assert_error(post(server, "/v1/embeddings", {"input": long_text}), 413)
    assert_error(post(server, "/v1/rerank", {"query": "q", "documents": [long_text]}), 413)
    ok = post(server, "/v1/embeddings", {"input": long_text, "truncate": True}).json()
    assert ok["usage"]["truncated_tokens"] > 2000 and ok["usage"]["prompt_tokens"] == 512
    bad = server.request("POST", "/v1/search", content=b'{"query": ', headers={"content-type": "application/json"})
    assert_error(bad, 422)
    assert_error(post(server, "/v1/search", {"query": 5, "top_k": "many"}), 422)
    assert_error(post(server, "/v1/search", {"query": "q", "filter": {"section": {"nested": 1}}}), 422)
    assert_error(get(server, "/v1/nothing"), 404)


def test_queue_full_gives_429_with_retry_after(server):
    doc = "tokens and more tokens " * 60  # ~300 tokens; 15 of them exceed the 6000-token queue

    with ThreadPoolExecutor(12) as pool:  # 12 concurrent requests into the app's one event loop
        responses = list(pool.map(  # distinct documents: the score cache would answer repeats
            lambda r: post(server, "/v1/rerank", {"query": "q", "documents": [f"{doc} {r}.{i}" for i in range(15)]}),
            range(12)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    rejected = next(r for r in responses if r.status_code == 429)
    assert int(rejected.headers["retry-after"]) >= 1
    assert_error(rejected, 429)
    assert get(server, "/healthz").status_code == 200  # and it keeps serving
    assert post(server, "/v1/rerank", {"query": "q", "documents": ["d"]}).status_code == 200


def test_metrics_exposes_stages_batches_and_errors(server):
    post(server, "/v1/search", {"query": "library", "top_k": 3})
    post(server, "/v1/search", {"query": ""})
    text = get(server, "/metrics").text
    for name in ["reprank_request_seconds_bucket", "reprank_stage_seconds_bucket{le=\"0.005\",stage=\"encode\"",
                 "reprank_batch_size_bucket", "reprank_batch_tokens_bucket", "reprank_queue_depth",
                 "reprank_errors_total", "reprank_requests_total", "reprank_rejected_total"]:
        assert name in text, name
    assert 'route="/v1/search",status="400"' in text
    stages = {json.dumps(s) for s in ["encode", "search", "rerank"]}
    assert all(f"stage={s}" in text for s in stages)
