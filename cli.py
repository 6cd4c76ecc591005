"""`reprank index | serve | search | eval | train`: every model/store flag maps onto service.settings.Settings (env REPRANK_*)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import textwrap

SETTINGS_FLAGS = ("data_dir", "qdrant_url", "qdrant_api_key", "model", "model_preset", "reranker",
                  "reranker_preset", "base", "device", "dtype", "collection", "host", "port",
                  "role", "encoder_urls", "reranker_urls", "worker_timeout_s")


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models and store (defaults from env REPRANK_*)")
    g.add_argument("--data-dir", help="folder of the embedded Qdrant Edge store (env REPRANK_DATA_DIR, default ./data)")
    g.add_argument("--qdrant-url", help="use a Qdrant server at this URL instead of the embedded store")
    g.add_argument("--qdrant-api-key", help="API key of that Qdrant server")
    g.add_argument("--model", help="encoder: a preset (smollm2, repllama, llara) or a local model/adapter path")
    g.add_argument("--model-preset", help="the encoder preset of a --model path")
    g.add_argument("--reranker", help="reranker: a preset (smollm2-rankllama-trained, smollm2-reranker, rankllama, "
                   "qwen3-reranker), a local path, or 'none'")
    g.add_argument("--reranker-preset", help="the reranker preset of a --reranker path")
    g.add_argument("--base", help="base model (local path or .gguf) for adapters")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--dtype", help="auto, float32, bfloat16, float16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprank",
        description="LLM retrieval and reranking: index corpora into Qdrant, serve /v1/search, "
        "/v1/embeddings and /v1/rerank.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="encode a corpus (BEIR corpus.jsonl[.gz], JSONL, Parquet) into a collection")
    p.add_argument("--corpus", required=True, help="corpus file, or a BEIR dataset folder")
    p.add_argument("--collection", required=True)
    p.add_argument("--chunk-size", type=int, default=64, help="documents encoded and written per step")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: Ray Data reads the corpus and an actor pool of encoders embeds it (README: Ray)")
    p.add_argument("--ray-address", help="the Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--ray-actors", type=int, help="encoder actors (default: one per GPU, else CPUs - 1)")
    p.add_argument("--in-place", action="store_true", help="Qdrant server: upsert into the collection (or its "
                   "alias target) instead of building COLLECTION-v<n> and moving the alias COLLECTION to it")
    p.add_argument("--keep-versions", type=int, default=1, help="Qdrant server: old versions kept for rollback")
    _common(p)

    p = sub.add_parser("serve", help="serve the REST API with uvicorn")
    p.add_argument("--collection", help="searched when a request names none (default: 'default')")
    p.add_argument("--host", help="default 127.0.0.1")
    p.add_argument("--port", type=int, help="default 8000")
    g = p.add_argument_group("gateway and workers (README: Scale-out)")
    g.add_argument("--role", choices=["all", "gateway", "worker"],
                   help="all (default): models and search here; worker: serve this process's models "
                   "(--model none or --reranker none for one of them); gateway: search, calling workers")
    g.add_argument("--encoder-url", dest="encoder_urls", action="append",
                   help="gateway: an encoder worker replica (repeat, or comma-separate; env REPRANK_ENCODER_URLS)")
    g.add_argument("--reranker-url", dest="reranker_urls", action="append",
                   help="gateway: a reranker worker replica (repeat or comma-separate); none = no reranking")
    g.add_argument("--worker-timeout", dest="worker_timeout_s", type=float,
                   help="gateway: seconds per attempt before trying the next replica (default 30)")
    _common(p)

    p = sub.add_parser("search", help="search a collection and print a table")
    p.add_argument("query")
    p.add_argument("--collection")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--candidates", type=int)
    p.add_argument("--no-rerank", action="store_true")
    p.add_argument("--hybrid", action=argparse.BooleanOptionalAction,
                   help="fuse dense and BM25 (RRF) before reranking (default: the server's setting, on)")
    p.add_argument("--rerank-fusion", choices=("rrf", "none"), help="order by RRF of retrieval and rerank "
                   "ranks, or by the rerank score alone (default: the server's setting)")
    p.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"section": "python"}\'')
    p.add_argument("--url", help="ask a running server (e.g. http://127.0.0.1:8000) instead of loading models here")
    _common(p)

    p = sub.add_parser("eval", help="nDCG@10, MRR@10, Recall@100 of bm25, dense, hybrid (+ rerank) on a BEIR dataset")
    p.add_argument("--dataset", required=True, help="BEIR folder: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/")
    p.add_argument("--split", default="dev")
    p.add_argument("--output", help="JSON {pipeline: {metric: value}}; TREC run files are written beside it")
    p.add_argument("--collection", help="default: derived from dataset, encoder and preset (reused if complete)")
    p.add_argument("--pipelines", nargs="+", help="default: bm25 dense hybrid dense+rerank hybrid+rerank "
                   "dense+rerank+rrf hybrid+rerank+rrf (+rrf: the rerank fused with the retrieval ranks, "
                   "the order /v1/search gives by default)")
    p.add_argument("--max-queries", type=int, help="the first N queries of the split")
    p.add_argument("--candidates", type=int, default=100, help="retrieved per query (Recall@100 needs 100)")
    p.add_argument("--rerank-depth", type=int, default=20, help="top candidates the reranker rescores")
    p.add_argument("--no-progress", action="store_true")
    _common(p)

    from models.train import add_parsers

    add_parsers(sub, _common)
    return parser


def settings_from(args: argparse.Namespace):
    from service.settings import Settings

    given = {k: getattr(args, k) for k in SETTINGS_FLAGS if getattr(args, k, None) is not None}
    return Settings(**given)


def cmd_index(args) -> int:
    from indexer.jobs import IndexJob, run_index

    job = IndexJob(args.corpus, args.collection, args.engine, args.chunk_size, not args.no_progress,
                   args.in_place, args.keep_versions, args.ray_address, args.ray_actors)
    print(run_index(job, settings_from(args)))
    return 0


def cmd_serve(args) -> int:
    from models.loading import resolve
    from models.presets import ENCODERS, RERANKERS
    from service.app import create_app
    from service.lifecycle import serve

    s = settings_from(args)
    if s.role == "gateway" and not s.encoder_urls:
        raise ValueError("--role gateway needs at least one --encoder-url")
    if s.model == "none" and s.role != "worker":
        raise ValueError("--model none is for a reranker-only --role worker")
    for name, presets in ((s.model, ENCODERS), (s.reranker, RERANKERS)):  # fail before binding the port
        if s.role != "gateway" and name != "none" and name not in presets:
            resolve(name)
    serve(create_app(s), s)  # SIGTERM: drain, finish in-flight requests, exit 0
    return 0


def cmd_search(args) -> int:
    body = {"query": args.query, "top_k": args.top_k}
    if args.hybrid is not None:
        body["hybrid"] = args.hybrid
    if args.collection:
        body["collection"] = args.collection
    if args.candidates:
        body["candidates"] = args.candidates
    if args.no_rerank:
        body["rerank"] = False
    if args.rerank_fusion:
        body["rerank_fusion"] = args.rerank_fusion
    if args.filter:
        body["filter"] = json.loads(args.filter)
    if args.url:
        import httpx

        r = httpx.post(args.url.rstrip("/") + "/v1/search", json=body, timeout=120)
        if r.status_code != 200:
            raise SystemExit(f"error {r.status_code}: {r.json().get('error', {}).get('message', r.text)}")
        result = r.json()
    else:
        result = asyncio.run(_search_here(args, body))
    _print_table(result)
    return 0


async def _search_here(args, body: dict) -> dict:
    from service.app import load_pipeline
    from service.metrics import Metrics
    from service.schemas import SearchRequest

    s = settings_from(args)
    if args.no_rerank:
        s.reranker = "none"
    s.warmup = False
    store = s.open_store()
    pipeline = await load_pipeline(s, store, Metrics())
    try:
        return (await pipeline.search(SearchRequest(**body))).model_dump()
    finally:
        await pipeline.close()
        store.close()


def cmd_eval(args) -> int:
    from indexer.evaluate import PIPELINES, evaluate, format_table, write_outputs
    from indexer.store import open_store
    from models import open_encoder, open_reranker

    s = settings_from(args)
    kw = s.model_kwargs()
    pipelines = tuple(args.pipelines or PIPELINES)
    rerank = s.reranker != "none" and any("+rerank" in p for p in pipelines)
    store = open_store(s.data_dir, s.qdrant_url, s.qdrant_api_key)
    encoder = reranker = None
    try:
        encoder = open_encoder(s.model, s.model_preset, **kw)
        reranker = open_reranker(s.reranker, s.reranker_preset, **kw) if rerank else None
        metrics, runs, info = evaluate(
            args.dataset, args.split, encoder, reranker, store, collection=args.collection,
            pipelines=pipelines, max_queries=args.max_queries, candidates=args.candidates,
            rerank_depth=args.rerank_depth, progress=not args.no_progress)
    finally:
        for model in (encoder, reranker):
            if model is not None:
                model.close()
        store.close()
    print(format_table(metrics, info))
    if args.output:
        print("wrote " + ", ".join(str(p) for p in write_outputs(args.output, metrics, runs)))
    return 0


def cmd_train(args) -> int:
    import importlib

    if args.recipe == "export":
        from models.train.common import export_checkpoint

        export_checkpoint(args)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.recipe != "mine":
        return importlib.import_module(f"models.train.{args.recipe}").run(args)

    from indexer.store import open_store
    from models import open_encoder
    from models.train.mine import mine, mine_bm25

    if args.method == "bm25":
        mine_bm25(args.dataset, args.output, limit_queries=args.limit_train_queries, depth=args.depth, seed=args.seed,
                  exclude=args.exclude_queries)
        return 0
    s = settings_from(args)
    store = open_store(s.data_dir, s.qdrant_url, s.qdrant_api_key)
    encoder = None
    try:
        encoder = open_encoder(s.model, s.model_preset, **s.model_kwargs())
        mine(args.dataset, encoder, store, args.output, limit_queries=args.limit_train_queries,
             corpus_limit=args.corpus_limit, depth=args.depth, method=args.method, seed=args.seed,
             collection=args.collection, progress=not args.no_progress, exclude=args.exclude_queries)
    finally:
        if encoder is not None:
            encoder.close()
        store.close()
    return 0


def _print_table(result: dict) -> None:
    print(f"collection {result['collection']}  reranked={result['reranked']}  timings_ms={result['timings_ms']}")
    print(f"{'#':>2}  {'score':>8}  {'retrieval':>9}  {'id':<14}  text")
    for i, h in enumerate(result["results"], 1):
        text = textwrap.shorten(f"{h['title']} {h['text']}".strip(), width=90, placeholder="...")
        print(f"{i:>2}  {h['score']:>8.4f}  {h['retrieval_score']:>9.4f}  {h['id'][:14]:<14}  {text}")


def main(argv: list[str] | None = None) -> int:
    from service.security import disable_telemetry

    disable_telemetry()  # before any Hugging Face library reads its environment
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in a trained adapter's train_args.json
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from indexer.corpus import CorpusError
    from indexer.store import StoreError
    from models.errors import InputTooLong, ModelNotFound
    from service.errors import ApiError

    try:
        commands = {"index": cmd_index, "serve": cmd_serve, "search": cmd_search, "eval": cmd_eval, "train": cmd_train}
        return commands[args.command](args)
    except (ModelNotFound, StoreError, CorpusError, InputTooLong, ApiError, KeyError, ValueError) as e:
        print(f"reprank: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
