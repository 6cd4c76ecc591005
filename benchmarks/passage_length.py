"""Dense quality of the default encoder with a shorter max length, so shorter passage windows.

The shipped adapters were trained on passages cut at 144 tokens (`--passage-max-length 144`) and
serve up to 533. The indexer splits a document longer than the encoder's window (its max length
less the template and a title's room, indexer/passages.py) into overlapping windows, and a document
scores as its best one; so a shorter max length means more, shorter windows, none of the text
dropped. Each length gets its own collection and a TREC run per dataset for benchmarks/compare_runs.py.

    python benchmarks/passage_length.py --datasets data/heldout/sphinx-500 data/heldout-150 \\
        --split heldout --lengths 144 277 533 --data-dir /tmp/len --output benchmarks/results/len.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from machine import describe

from models import open_encoder
from models.encoder import Encoder
from search.evaluate import evaluate, write_outputs
from service.settings import Settings
from store import open_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--split", default="heldout")
    p.add_argument("--lengths", nargs="+", type=int, required=True, help="whole passage sequence, template included")
    p.add_argument("--max-queries", type=int)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()

    s = Settings(data_dir=Path(args.data_dir))
    result = {**describe(), "lengths": {}}
    with open_store(s.store_config()) as store, open_encoder(s.model, dtype=s.torch_dtype()) as shipped:
        for length in args.lengths:
            with Encoder(shipped.model, replace(shipped.preset, max_length=length)) as enc:  # same weights
                table = result["lengths"][str(length)] = {}
                for dataset in args.datasets:
                    name = Path(dataset).name
                    metrics, trec, _ = evaluate(dataset, args.split, enc, None, store, pipelines=("dense",),
                                                max_queries=args.max_queries, progress=False)
                    table[name] = metrics["dense"]
                    write_outputs(args.output.with_name(f"{args.output.stem}.{name}.{length}.json"), metrics, trec)
                    print(length, name, round(metrics["dense"]["ndcg@10"], 4), flush=True)
                    args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
