"""What a latency budget buys: nDCG@10 of the default search (hybrid + rerank + RRF) against budget_ms.

Runs `reprank eval`'s evaluate on held-out train queries (benchmarks/make_heldout.py; never dev) with
the service's defaults, once per budget; each budgeted search does all its own work, one query at a
time (an idle server), so its reranked depth is what /v1/search would give. The unbudgeted search and
plain hybrid (no rerank) are the two ends, from the same run. Writes a JSON and a plot.

    python benchmarks/budget_curve.py --dataset /tmp/heldout-150 --split heldout --data-dir /tmp/budget-data \\
        --budgets 100 300 1000 3000 --candidates 20 --output benchmarks/results/budget-curve-<date>.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from machine import describe

from models import open_encoder, open_reranker
from search.evaluate import evaluate
from service.settings import Settings
from store import open_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="heldout")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--budgets", type=float, nargs="+", default=[100, 300, 1000, 3000])
    p.add_argument("--candidates", type=int, default=20, help="retrieved and, unbudgeted, reranked")
    p.add_argument("--max-queries", type=int)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()

    s = Settings(data_dir=Path(args.data_dir))
    with open_store(s.store_config()) as store, open_encoder(s.model, **s.model_kwargs()) as enc, \
            open_reranker(s.reranker, **s.model_kwargs("rerank")) as rr:
        metrics, _, info = evaluate(args.dataset, args.split, enc, rr, store,
                                    pipelines=("hybrid", "hybrid+rerank+rrf"), candidates=args.candidates,
                                    rerank_depth=args.candidates, budgets_ms=tuple(args.budgets),
                                    max_queries=args.max_queries)

    rows = [{"budget_ms": b["budget_ms"], "ndcg@10": metrics[name]["ndcg@10"], **b}
            for name, b in info["budgets"].items()]
    result = {**describe(), "dtype": str(s.torch_dtype()), "candidates": args.candidates,
              "dataset": info["dataset"], "split": args.split, "queries": info["queries"],
              "hybrid": metrics["hybrid"], "unlimited": metrics["hybrid+rerank+rrf"], "budgets": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.output.with_suffix(".png"))
    print(f"hybrid (no rerank) {metrics['hybrid']['ndcg@10']:.4f}, unlimited {metrics['hybrid+rerank+rrf']['ndcg@10']:.4f}")
    for r in rows:
        print(f"budget {r['budget_ms']:>6g} ms: nDCG@10 {r['ndcg@10']:.4f}, reranked {r['mean_reranked']}, "
              f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, over budget+10% {r['over_budget_10pct']:.1%}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["budgets"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot([r["budget_ms"] for r in rows], [r["ndcg@10"] for r in rows], "o-", label="default search, budgeted")
    for name, style in (("unlimited", "--"), ("hybrid", ":")):
        label = "no budget (all reranked)" if name == "unlimited" else "hybrid, no rerank"
        ax.axhline(result[name]["ndcg@10"], linestyle=style, color="grey", label=label)
    for r in rows:
        ax.annotate(f"{r['mean_reranked']:g} reranked", (r["budget_ms"], r["ndcg@10"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("budget_ms (log)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"{result['queries']} held-out queries, {result['candidates']} candidates, "
                 f"{result['threads']} threads ({result['cpu_capability']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
