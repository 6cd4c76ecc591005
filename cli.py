"""`reprank index | serve | search | eval | train`: the top layer. Flags of settings come from the fields of
service.settings.Settings (help, env REPRANK_*, default), and every command opens its store by store.open_store."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import textwrap
import types
import typing

STORE = ("data_dir", "qdrant_url", "qdrant_api_key")
MODELS = ("model", "model_preset", "reranker", "reranker_preset", "base", "device", "dtype",
          "max_batch_tokens", "max_batch_size")
PASSAGES = ("passage_tokens", "passage_stride")


def _settings_flags(p: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                    title: str = "models and store") -> None:
    """One flag per Settings field (all of them when `names` is None), its help, env var and default
    read from the field itself; a flag left out keeps the env's or the default value."""
    from service.settings import Settings

    g = p.add_argument_group(f"{title} (each also set by env REPRANK_<NAME>)")
    for name in names or tuple(Settings.model_fields):
        f = Settings.model_fields[name]
        flag = (f.json_schema_extra or {}).get("flag", "--" + name.replace("_", "-"))
        if flag is None:  # a secret: from the environment only, never on a command line others can read
            continue
        default = "unset" if f.default in (None, []) else f.default
        kw: dict = {"dest": name, "help": f"{f.description} (env REPRANK_{name.upper()}, default {default})"}
        if typing.get_origin(f.annotation) is list:
            kw["help"] += "; repeat, or comma-separate"
        kw |= _parse_as(f.annotation)
        g.add_argument(flag, **kw)


def _parse_as(annotation) -> dict:
    """argparse's reading of a field: `int | None` as int, a Literal as choices, a list appended."""
    kind = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation) \
        if isinstance(annotation, types.UnionType) else annotation
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(kind) is typing.Literal:
        return {"choices": typing.get_args(kind)}
    if typing.get_origin(kind) is list:
        return {"action": "append"}
    return {"type": kind} if kind in (int, float) else {}


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
    p.add_argument("--engine", dest="index_engine", choices=["local", "ray"], default="local",
                   help="ray: Ray Data reads the corpus and an actor pool of encoders embeds it (README: Ray)")
    p.add_argument("--ray-address", help="the Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--ray-actors", type=int, help="encoder actors (default: one per GPU, else CPUs - 1)")
    p.add_argument("--in-place", action="store_true", help="Qdrant server: upsert into the collection (or its "
                   "alias target) instead of building COLLECTION-v<n> and moving the alias COLLECTION to it")
    p.add_argument("--keep-versions", type=int, default=1, help="Qdrant server: old versions kept for rollback")
    _settings_flags(p, STORE + MODELS + PASSAGES)

    p = sub.add_parser("serve", help="serve the REST API with uvicorn (every setting is a flag here; "
                       "gateway and workers: README Scale-out)")
    _settings_flags(p, title="settings")

    p = sub.add_parser("search", help="search a collection and print a table")
    p.add_argument("query")
    p.add_argument("--collection")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--candidates", type=int)
    p.add_argument("--no-rerank", action="store_true")
    p.add_argument("--rerank-fusion", choices=("rrf", "none"), help="order by RRF of retrieval and rerank "
                   "ranks, or by the rerank score alone (default: the server's setting)")
    p.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"section": "python"}\'')
    p.add_argument("--url", help="ask a running server (e.g. http://127.0.0.1:8000) instead of loading models here")
    _settings_flags(p, STORE + MODELS + ("hybrid",))

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
    p.add_argument("--budget-ms", type=float, nargs="+", default=[], help="also run each reranked pipeline "
                   "within these latency budgets (as /v1/search's budget_ms), e.g. 100 300 1000 3000")
    p.add_argument("--no-progress", action="store_true")
    _settings_flags(p, STORE + MODELS)

    p = sub.add_parser("vllm-args", help="export a model for a stock vLLM server (a plain HF folder in the model "
                       "cache), print the `vllm serve` command that pools or scores as its preset does and the gateway "
                       "settings that render its template")
    p.add_argument("task", choices=("embedding", "rerank"))
    p.add_argument("--port", type=int, default=8001)
    _settings_flags(p, MODELS)

    from training import add_parsers

    add_parsers(sub, lambda p: _settings_flags(p, STORE + MODELS))
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """`--api-keys` must not pass as an abbreviation of `--api-keys-file`: only whole flags count."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def settings_from(args: argparse.Namespace):
    from service.settings import Settings

    given = {k: getattr(args, k) for k in Settings.model_fields if getattr(args, k, None) is not None}
    return Settings(**given)


def cmd_index(args) -> int:
    from indexer.jobs import IndexJob, run_index

    job = IndexJob(args.corpus, args.collection, args.index_engine, args.chunk_size, not args.no_progress,
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
    from store import open_store

    s = settings_from(args)
    if args.no_rerank:
        s.reranker = "none"
    s.warmup = False
    with open_store(s.store_config()) as store:
        pipeline = await load_pipeline(s, store, Metrics())
        try:
            return (await pipeline.search(SearchRequest(**body))).model_dump()
        finally:
            await pipeline.aclose()


def cmd_eval(args) -> int:
    from contextlib import ExitStack

    from models import open_encoder, open_reranker
    from search.evaluate import PIPELINES, evaluate, format_table, write_outputs
    from store import open_store

    s = settings_from(args)
    kw = s.model_kwargs()
    pipelines = tuple(args.pipelines or PIPELINES)
    rerank = s.reranker != "none" and any("+rerank" in p for p in pipelines)
    with ExitStack() as opened:
        store = opened.enter_context(open_store(s.store_config()))
        encoder = opened.enter_context(open_encoder(s.model, s.model_preset, **kw))
        reranker = (opened.enter_context(open_reranker(s.reranker, s.reranker_preset, **s.model_kwargs("rerank")))
                    if rerank else None)
        metrics, runs, info = evaluate(
            args.dataset, args.split, encoder, reranker, store, collection=args.collection,
            pipelines=pipelines, max_queries=args.max_queries, candidates=args.candidates,
            rerank_depth=args.rerank_depth, budgets_ms=tuple(args.budget_ms), progress=not args.no_progress)
    print(format_table(metrics, info))
    if args.output:
        print("wrote " + ", ".join(str(p) for p in write_outputs(args.output, metrics, runs)))
    return 0


def cmd_train(args) -> int:
    import importlib

    if args.recipe == "export":
        from training.common import export_checkpoint

        export_checkpoint(args)
        return 0
    if args.recipe in ("sources", "mix"):  # data only: no torch threads to set
        return importlib.import_module(f"training.{args.recipe}").run(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.recipe != "mine":
        return importlib.import_module(f"training.{args.recipe}").run(args)

    from models import open_encoder
    from store import open_store
    from training.mine import mine, mine_bm25

    if args.method == "bm25":
        mine_bm25(args.dataset, args.output, limit_queries=args.limit_train_queries, depth=args.depth, seed=args.seed,
                  exclude=args.exclude_queries)
        return 0
    s = settings_from(args)
    with open_store(s.store_config()) as store, open_encoder(s.model, s.model_preset, **s.model_kwargs()) as encoder:
        mine(args.dataset, encoder, store, args.output, limit_queries=args.limit_train_queries,
             corpus_limit=args.corpus_limit, depth=args.depth, method=args.method, seed=args.seed,
             collection=args.collection, progress=not args.no_progress, exclude=args.exclude_queries)
    return 0


def _print_table(result: dict) -> None:
    print(f"collection {result['collection']}  reranked={result['reranked']}  timings_ms={result['timings_ms']}")
    print(f"{'#':>2}  {'score':>8}  {'retrieval':>9}  {'id':<14}  text")
    for i, h in enumerate(result["results"], 1):
        text = textwrap.shorten(f"{h['title']} {h['text']}".strip(), width=90, placeholder="...")
        print(f"{i:>2}  {h['score']:>8.4f}  {h['retrieval_score']:>9.4f}  {h['id'][:14]:<14}  {text}")


def cmd_vllm_args(args) -> int:
    import shlex

    from transformers import AutoTokenizer

    from models import encoder_source, reranker_source
    from models.presets import encoder_preset, reranker_preset
    from models.vllm_engine import export_for, gateway_formats, plan_for

    s = settings_from(args)
    if args.task == "embedding":
        source, name = encoder_source(s.model, s.model_preset)
        preset = encoder_preset(name)
    else:
        source, name = reranker_source(s.reranker, s.reranker_preset)
        preset = reranker_preset(name)
    flags = plan_for(preset).serve_flags()  # refuses a preset a stock server cannot pool before the export
    folder = export_for(source, preset, base=s.base)
    command = ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--served-model-name", name, "--max-model-len", str(preset.max_length), *flags,
               "--port", str(args.port)]
    print(shlex.join(command))
    formats = gateway_formats(preset, AutoTokenizer.from_pretrained(folder))
    print("# the gateway in front of it (reprank serve --role gateway) renders the preset's template with:")
    print("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in formats.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    from service.security import disable_telemetry

    disable_telemetry()  # before any Hugging Face library reads its environment
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in a trained adapter's train_args.json
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from indexer.corpus import CorpusError
    from models.errors import InputTooLong, ModelNotFound
    from service.errors import ApiError
    from store import StoreError

    try:
        commands = {"index": cmd_index, "serve": cmd_serve, "search": cmd_search, "eval": cmd_eval, "train": cmd_train,
                    "vllm-args": cmd_vllm_args}
        return commands[args.command](args)
    except (ModelNotFound, StoreError, CorpusError, InputTooLong, ApiError, KeyError, ValueError) as e:
        print(f"reprank: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
