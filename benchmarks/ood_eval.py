"""Out-of-domain quality: the shipped encoder and search against BM25 and all-MiniLM-L6-v2, same run.

For each BEIR dataset (e.g. the `reprank train sources` dev sets: perlpod, info) the service's default
models run bm25, dense, hybrid and the default search (hybrid + rerank + RRF, reranking the top 10 as
the service does on a CPU); then
all-MiniLM-L6-v2 (the `all-minilm-l6-v2` preset, fp32) runs dense and hybrid over its own collection.
An `--encoder` adapter (e.g. one `reprank train adapt` wrote) adds its dense and hybrid rows. Writes a
JSON and TREC runs (for benchmarks/compare_runs.py) beside it.

    python benchmarks/ood_eval.py --datasets /work/data/sources/perlpod /work/data/sources/info \\
        --data-dir /tmp/ood-data --output benchmarks/results/ood-<date>.json
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path

import torch
from machine import describe

from models import open_encoder, open_reranker
from search.evaluate import evaluate, write_outputs
from service.settings import CPU_CANDIDATES, Settings
from store import open_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--split", default="dev")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--encoder", help="also an adapted encoder (a folder `reprank train adapt` wrote)")
    p.add_argument("--no-default", action="store_true", help="skip the shipped models (only MiniLM/--encoder)")
    p.add_argument("--max-queries", type=int)
    p.add_argument("--rerank-depth", type=int, default=CPU_CANDIDATES, help="the default search's depth "
                   "(default: the service's on a CPU)")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()

    s = Settings(data_dir=Path(args.data_dir))
    runs = [] if args.no_default else [("reprank", s.model, None, s.torch_dtype(), ("bm25", "dense", "hybrid",
                                                                                      "hybrid+rerank+rrf"))]
    runs.append(("minilm", "all-minilm-l6-v2", None, torch.float32, ("dense", "hybrid")))
    if args.encoder:
        runs.append(("adapted", args.encoder, "smollm2-retriever", s.torch_dtype(), ("dense", "hybrid")))
    result = {**describe(), "datasets": {}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open_store(s.store_config()) as store:
        for dataset in args.datasets:
            name = Path(dataset).name
            table = result["datasets"][name] = {}
            for label, model, preset, dtype, pipelines in runs:
                with ExitStack() as opened:
                    enc = opened.enter_context(open_encoder(model, preset, dtype=dtype))
                    rerank = any("rerank" in x for x in pipelines)
                    rr = opened.enter_context(open_reranker(s.reranker, dtype=dtype)) if rerank else None
                    metrics, trec, info = evaluate(dataset, args.split, enc, rr, store, pipelines=pipelines,
                                                   max_queries=args.max_queries, rerank_depth=args.rerank_depth)
                table.update({f"{label} {k}": v for k, v in metrics.items()})
                table["queries"], table["rerank_depth"] = info["queries"], args.rerank_depth
                write_outputs(args.output.with_name(f"{args.output.stem}.{name}.{label}.json"), metrics, trec)
                print(name, label, {k: round(v["ndcg@10"], 4) for k, v in metrics.items()}, flush=True)
                args.output.write_text(json.dumps(result, indent=1) + "\n")  # after each run: a stop keeps them


if __name__ == "__main__":
    main()
