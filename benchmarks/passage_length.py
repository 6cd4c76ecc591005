"""Quality of the default encoder (dense, or any eval pipeline) with a shorter max length, so shorter
passage windows.

The shipped adapters were trained on passages cut at 144 tokens (`--passage-max-length 144`) and
serve up to 533. The indexer splits a document longer than the encoder's window (its max length
less the template and a title's room, indexer/passages.py) into overlapping windows, and a document
scores as its best one; so a shorter max length means more, shorter windows, none of the text
dropped. Each length gets its own collection and a TREC run per dataset and pipeline for
benchmarks/compare_runs.py; a `+rerank` pipeline uses the default reranker at the CPU's rerank depth.

    python benchmarks/passage_length.py --datasets data/heldout/sphinx-500 data/heldout-150 \\
        --split heldout --lengths 144 277 533 --data-dir /tmp/len --output benchmarks/results/len.json
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from machine import describe

from models import open_encoder, open_reranker
from models.encoder import Encoder
from search.evaluate import evaluate, write_outputs
from service.settings import CPU_CANDIDATES, Settings
from store import open_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--split", default="heldout")
    p.add_argument("--lengths", nargs="+", type=int, required=True, help="whole passage sequence, template included")
    p.add_argument("--max-queries", type=int)
    p.add_argument("--pipelines", nargs="+", default=["dense"], help="eval pipelines, e.g. dense hybrid+rerank+rrf")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()

    s = Settings(data_dir=Path(args.data_dir))
    result = {**describe(), "lengths": {}}
    with ExitStack() as opened:
        store = opened.enter_context(open_store(s.store_config()))
        shipped = opened.enter_context(open_encoder(s.model, dtype=s.torch_dtype()))
        rerank = any("+rerank" in x for x in args.pipelines)
        rr = opened.enter_context(open_reranker(s.reranker, dtype=s.torch_dtype())) if rerank else None
        for length in args.lengths:
            with Encoder(shipped.model, replace(shipped.preset, max_length=length)) as enc:  # same weights
                table = result["lengths"][str(length)] = {}
                for dataset in args.datasets:
                    name = Path(dataset).name
                    metrics, trec, _ = evaluate(dataset, args.split, enc, rr, store, pipelines=tuple(args.pipelines),
                                                max_queries=args.max_queries, rerank_depth=CPU_CANDIDATES,
                                                progress=False)
                    table[name] = metrics
                    write_outputs(args.output.with_name(f"{args.output.stem}.{name}.{length}.json"), metrics, trec)
                    print(length, name, {k: round(v["ndcg@10"], 4) for k, v in metrics.items()}, flush=True)
                    args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
