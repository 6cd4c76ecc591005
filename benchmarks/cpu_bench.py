"""CPU indexing speed of the bundled SmolLM2-135M: reprank's encoder against plain Hugging Face, same run.

Both encode the same Debian passages with the same template and pooling (so the vectors must agree:
the bench checks it) and the same threads. The baseline is what a user writes with transformers:
the texts sorted by length, padded batches of --hf-batch, fp32, SDPA. reprank runs its own path: the
token-budget batcher (small batches on CPU) through models.open_encoder; its packed layout (the CUDA
path, per-sequence attention on CPU) is timed too, for the record. They alternate in --rounds rounds so that background load hits both alike; the ratio of the summed times is the figure.

    python benchmarks/cpu_bench.py --docs 200            # last line: cpu_speedup_vs_hf=<ratio>
    python benchmarks/cpu_bench.py --docs 128 --vllm     # + the vLLM engine and a stock vLLM server (HTTP)

With --vllm the same texts also go through reprank's vLLM engine (in process) and a stock vLLM server
started here with the flags `reprank vllm-args` prints, called over HTTP as a client would; and a
20-document rerank (the default reranker's preset) is timed on the torch engine, the vLLM engine and
the stock server's /v1/rerank. Ratios are against stock vLLM.

    python benchmarks/cpu_bench.py --docs 128 --http     # + the query path through HTTP
    python benchmarks/cpu_bench.py --docs 32 --upsert    # + REST upserts against the offline indexer

With --http a `reprank serve` with the service's defaults (a real uvicorn process over the first
--http-docs sample documents) answers one query at a time, as a client sees it: a query's
/v1/embeddings, /v1/search without rerank, the default /v1/search, and the same search at the old
default depth of 20; the bare forward pass of each query (in this process, before the server starts)
is the baseline the HTTP figures are divided by.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from indexer.corpus import read_corpus
from models import open_encoder
from models.loading import cpu_bf16, resolve
from service.settings import Settings
from store import passage_text

ROOT = Path(__file__).resolve().parent.parent


def hf_baseline(tok, model, texts: list[str], batch: int) -> np.ndarray:
    """Plain transformers: tokenize, sort by length, pad, forward, read the EOS state, normalise."""
    seqs = [tok("passage: " + t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            enc = tok.pad({"input_ids": [seqs[i] for i in idx]}, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            last = enc["attention_mask"].sum(1) - 1  # right padding
            vec = torch.nn.functional.normalize(hidden[torch.arange(len(idx)), last], dim=-1)
            out[idx] = vec.numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared/data/debian-packages/small"))
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hf-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--vllm", action="store_true", help="also the vLLM engine and a stock vLLM server")
    ap.add_argument("--rerank-repeats", type=int, default=5, help="timed 20-document reranks per path")
    ap.add_argument("--http", action="store_true", help="also the query path through a real server")
    ap.add_argument("--http-docs", type=int, default=1000, help="sample documents the server searches")
    ap.add_argument("--http-queries", type=int, default=40, help="queries timed per row")
    ap.add_argument("--upsert", action="store_true", help="also REST upserts against the offline indexer")
    ap.add_argument("--upsert-docs", type=int, default=256, help="sample documents each of the two writes")
    ap.add_argument("--upsert-batch", type=int, default=32, help="documents per upsert request")
    ap.add_argument("--output", help="JSON file for the figures (default: benchmarks/results/cpu-DATE.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    texts = [passage_text(d) for d in itertools.islice(read_corpus(args.corpus), args.docs)]
    from transformers import AutoModel, AutoTokenizer

    path, kwargs = resolve("bundled:smollm2").hf_args()
    tok = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
    kw = Settings(engine="torch").model_kwargs()  # the service's own defaults on this device
    kw.pop("engine")  # each path names its engine
    encoders = {"reprank": open_encoder("smollm2", **kw),  # the service's defaults: dtype auto
                "packed": open_encoder("smollm2", packed=True, **kw)}  # the CUDA layout, for the record
    if kw["dtype"] != torch.float32:
        encoders["fp32"] = open_encoder("smollm2", **(kw | {"dtype": torch.float32}))
    for enc in encoders.values():
        enc.encode(texts[:4], "passage")  # warm-up, as the service does before it is ready
    timings = dict.fromkeys(["hf", *encoders], 0.0)
    vectors = {}
    for _ in range(args.rounds):
        t = time.perf_counter()
        ref = hf_baseline(tok, model, texts, args.hf_batch)
        timings["hf"] += time.perf_counter() - t
        for name, enc in encoders.items():
            t = time.perf_counter()
            vectors[name] = enc.encode(texts, "passage").vectors
            timings[name] += time.perf_counter() - t
    for enc in encoders.values():
        enc.close()
    cosines = {name: (ref * v).sum(1) for name, v in vectors.items()}
    exact = [name for name in encoders if name == "fp32" or kw["dtype"] == torch.float32]
    cos = np.min([cosines[name] for name in exact], axis=0)  # fp32 against fp32: the same computation
    assert cos.min() > 0.999, f"reprank and plain HF fp32 disagree: min cosine {cos.min():.5f}"

    n = len(texts) * args.rounds
    result = {
        "date": date.today().isoformat(), "device": f"{cpu_name()}, {args.threads} threads", "docs": len(texts), "rounds": args.rounds,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": cpu_bf16(),
        "dtype": str(kw["dtype"]).removeprefix("torch."),
        "hf_docs_per_s": round(n / timings["hf"], 2), "reprank_docs_per_s": round(n / timings["reprank"], 2),
        "reprank_packed_docs_per_s": round(n / timings["packed"], 2),
        **({"reprank_fp32_docs_per_s": round(n / timings["fp32"], 2)} if "fp32" in timings else {}),
        "hf_batch": args.hf_batch, "reprank_max_batch_tokens": kw["max_batch_tokens"],
        "min_cosine": round(float(cos.min()), 6),
        "default_dtype_min_cosine": round(float(cosines["reprank"].min()), 6),  # vs plain HF fp32
        "default_dtype_mean_cosine": round(float(cosines["reprank"].mean()), 6),
        "cpu_speedup_vs_hf": round(timings["hf"] / timings["reprank"], 3),
    }
    out = Path(args.output or ROOT / f"benchmarks/results/cpu-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(result, indent=1) + "\n")  # noqa: E731  after each section
    save()
    if args.vllm:
        result |= vllm_figures(texts, args, kw)
        save()
    if args.http:
        result |= http_figures(args, kw)
        save()
    if args.upsert:
        result |= upsert_figures(args, kw)
        save()
    print(json.dumps(result, indent=1))
    print(f"cpu_speedup_vs_hf={result['cpu_speedup_vs_hf']}")


def _stop(proc) -> None:
    """The server and its engine core (killing the server alone leaves the core running)."""
    import os
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _stock_server(task: str, model_flags: list[str], port: int, dtype: str):
    """A stock vLLM OpenAI server with the flags `reprank vllm-args` derives; returns (process, url, the
    gateway's text formats it prints)."""
    import shlex
    import subprocess
    import sys

    import httpx

    out = subprocess.run([sys.executable, "-m", "cli", "vllm-args", task, "--port", str(port), *model_flags],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip().splitlines()
    line = next(x for x in out if x.startswith("python "))
    formats = dict(x.split("=", 1) for x in shlex.split(out[-1].removeprefix("export ")))
    cmd = [sys.executable, *shlex.split(line)[1:], "--enforce-eager", "--dtype", dtype]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, formats
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited: {line}")
        time.sleep(1)
    _stop(proc)
    raise RuntimeError("vLLM did not start in 600 s")


def vllm_figures(texts: list[str], args, kw: dict) -> dict:
    """docs/s and 20-document rerank p50 on the torch engine, the vLLM engine and stock vLLM over HTTP."""
    import httpx

    from models import open_reranker

    query, docs = "tool to burn CDs and DVDs", texts[:20]
    dtype = str(kw["dtype"]).removeprefix("torch.")  # every path in the same dtype, stock vLLM too
    fig: dict = {}
    with open_encoder("smollm2", **kw) as torch_enc, open_encoder("smollm2", engine="vllm", **kw) as vllm_enc:
        torch_enc.encode(texts[:4], "passage")
        vllm_enc.encode(texts[:4], "passage")
        vectors = {}
        for name, enc in (("torch_engine", torch_enc), ("vllm_engine", vllm_enc)):
            t = time.perf_counter()
            vectors[name] = enc.encode(texts, "passage").vectors
            fig[f"{name}_docs_per_s"] = round(len(texts) / (time.perf_counter() - t), 2)
        fig["vllm_engine_min_cosine"] = round(float((vectors["torch_engine"] * vectors["vllm_engine"]).sum(1).min()), 6)
    proc, url, fmt = _stock_server("embedding", ["--model", "smollm2"], 8101, dtype)
    try:  # the raw smollm2 preset, LAST pooling; the client sends the text the gateway would
        body = {"model": "smollm2", "input": [fmt["REPRANK_REMOTE_PASSAGE_FORMAT"].format(text=t) for t in texts]}
        httpx.post(url + "/v1/embeddings", json={"model": "smollm2", "input": ["warm-up"]}, timeout=60)
        t = time.perf_counter()
        r = httpx.post(url + "/v1/embeddings", json=body, timeout=600).raise_for_status()
        fig["stock_vllm_docs_per_s"] = round(len(texts) / (time.perf_counter() - t), 2)
        stock = np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])], np.float32)
        fig["stock_vllm_min_cosine"] = round(float((vectors["torch_engine"] * stock).sum(1).min()), 6)
    finally:
        _stop(proc)
    # the three rerank paths timed in turn, round by round, so a slower spell of the machine hits all alike
    proc, url, fmt = _stock_server("rerank", ["--reranker", "smollm2-rankllama-trained"], 8102, dtype)
    try:
        body = {"model": "smollm2-rankllama-trained", "query": fmt["REPRANK_REMOTE_RERANK_QUERY_FORMAT"].format(query=query),
                "documents": [fmt["REPRANK_REMOTE_RERANK_DOCUMENT_FORMAT"].format(document=d) for d in docs]}
        post = lambda: httpx.post(url + "/v1/rerank", json=body, timeout=600).raise_for_status()  # noqa: E731
        with open_reranker(**kw) as torch_rr, open_reranker(engine="vllm", **kw) as vllm_rr:
            torch_relevance = np.array(torch_rr.score(query, docs).relevance)
            stock_rel = {x["index"]: x["relevance_score"] for x in post().json()["results"]}
            fig["stock_vllm_rerank_max_abs_diff"] = round(float(np.max(np.abs(
                np.array([stock_rel[i] for i in range(len(docs))]) - torch_relevance))), 6)
            paths = {"torch_engine": lambda: torch_rr.score(query, docs),
                     "vllm_engine": lambda: vllm_rr.score(query, docs), "stock_vllm": post}
            times: dict[str, list[float]] = {name: [] for name in paths}
            vllm_rr.score(query, docs[:2])
            for _ in range(args.rerank_repeats):
                for name, fn in paths.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
            for name, ts in times.items():
                fig[f"{name}_rerank20_p50_s"] = round(float(np.median(ts)), 3)
    finally:
        _stop(proc)
    for name in ("torch_engine", "vllm_engine"):
        fig[f"{name}_docs_per_s_vs_stock_vllm"] = round(fig[f"{name}_docs_per_s"] / fig["stock_vllm_docs_per_s"], 3)
        fig[f"{name}_rerank20_speed_vs_stock_vllm"] = round(
            fig["stock_vllm_rerank20_p50_s"] / fig[f"{name}_rerank20_p50_s"], 3)
    return fig


def _p50_ms(times: list[float]) -> float:
    return round(float(np.median(times)) * 1000, 1)


def http_figures(args, kw: dict) -> dict:
    """p50 of a query's path through a real server, one request at a time, against its bare forward."""
    import sys
    import tempfile

    import httpx

    sys.path.insert(0, str(ROOT))  # loadtests/ is not an installed package
    from loadtests.run import LocalServer, prepare_data

    with open(ROOT / "samples/debian-1k/queries.jsonl") as f:
        queries = [json.loads(line)["text"] for line, _ in zip(f, range(args.http_queries), strict=False)]
    with open_encoder(**kw) as enc:  # the default encoder, as the server will run it
        seqs = [enc.tokenize([q], "query", True)[0][0] for q in queries]
        enc._run(seqs[:1])
        forward = []
        for s in seqs:
            t = time.perf_counter()
            enc._run([s])
            forward.append(time.perf_counter() - t)
    data = Path(tempfile.mkdtemp(prefix="reprank-cpu-bench-"))
    prepare_data(data, args.http_docs)
    server = LocalServer(data, {}, data / "server.log")
    calls = {
        "embed_query": lambda c, q: c.post("/v1/embeddings", json={"input": [q], "input_type": "query"}),
        "search_no_rerank": lambda c, q: c.post("/v1/search", json={"query": q, "rerank": False}),
        "search_default": lambda c, q: c.post("/v1/search", json={"query": q}),
        "search_rerank20": lambda c, q: c.post("/v1/search", json={"query": q, "candidates": 20}),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    stages: dict[str, list[float]] = {}  # the server's own timings_ms of a search without rerank
    try:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            card = c.get("/v1/models").json()["data"]
            for q in queries:  # each query through every row in turn: a slow spell hits all rows alike
                for name, call in calls.items():
                    t = time.perf_counter()
                    r = call(c, q).raise_for_status()
                    times[name].append(time.perf_counter() - t)
                    if name == "search_no_rerank":
                        for stage, ms in r.json()["timings_ms"].items():
                            stages.setdefault(stage, []).append(ms / 1000)
            default_depth = c.post("/v1/search", json={"query": queries[0]}).json()["usage"]
    finally:
        server.stop()
    fig = {"http_queries": len(queries), "http_docs": args.http_docs, "query_tokens_p50": int(np.median([len(s) for s in seqs])),
           "server_dtypes": sorted({m.get("dtype", "?") for m in card}), "default_search_usage": default_depth,
           "query_forward_p50_ms": _p50_ms(forward)}
    for name, ts in times.items():
        fig[f"http_{name}_p50_ms"] = _p50_ms(ts)
        fig[f"http_{name}_p95_ms"] = round(float(np.percentile(ts, 95)) * 1000, 1)
    fig |= {f"server_{stage}_p50_ms": _p50_ms(ts) for stage, ts in stages.items()}
    fig["http_embed_query_vs_forward"] = round(fig["http_embed_query_p50_ms"] / fig["query_forward_p50_ms"], 2)
    fig["http_search_default_vs_rerank20"] = round(fig["http_search_default_p50_ms"] / fig["http_search_rerank20_p50_ms"], 3)
    return fig


def upsert_figures(args, kw: dict) -> dict:
    """Documents/s into a collection: `reprank index`'s code in this process against
    POST /v1/collections/{name}/documents on a real server, the same documents, one after the other."""
    import sys
    import tempfile

    import httpx

    sys.path.insert(0, str(ROOT))
    from indexer.run import index_corpus
    from loadtests.run import LocalServer
    from store import StoreConfig, open_store

    docs = list(itertools.islice(read_corpus(ROOT / "samples/debian-1k/corpus.jsonl"), args.upsert_docs))
    with open_encoder(**kw) as enc, open_store(StoreConfig(tempfile.mkdtemp(prefix="reprank-offline-"))) as store:
        enc.encode(["warm-up"], "passage")
        t = time.perf_counter()
        index_corpus(docs, enc, store, "offline", progress=False)
        offline = time.perf_counter() - t
    data = Path(tempfile.mkdtemp(prefix="reprank-upsert-"))
    server = LocalServer(data, {}, data / "server.log")
    try:
        with httpx.Client(base_url=server.url, timeout=600) as c:
            t = time.perf_counter()
            for i in range(0, len(docs), args.upsert_batch):
                body = [{"id": d.doc_id, "text": d.text, "title": d.title, "metadata": d.metadata}
                        for d in docs[i:i + args.upsert_batch]]
                c.post("/v1/collections/upserted/documents", json={"documents": body}).raise_for_status()
            rest = time.perf_counter() - t
            count = c.get("/v1/collections/upserted").json()["documents"]
    finally:
        server.stop()
    assert count == len(docs), f"{count} documents stored of {len(docs)}"
    return {"upsert_docs": len(docs), "upsert_batch": args.upsert_batch,
            "offline_index_docs_per_s": round(len(docs) / offline, 2), "rest_upsert_docs_per_s": round(len(docs) / rest, 2),
            "rest_upsert_vs_offline": round(offline / rest, 3)}


if __name__ == "__main__":
    main()
