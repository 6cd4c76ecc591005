"""The SLO report of a run folder (meta.json, requests-*.csv, rss.csv): report.md and latency.png.

Latency percentiles are of accepted (200) answers, per endpoint and phase; the error table counts
every status. For a soak the verdict checks the issue's criteria: RSS growth after warm-up under 5 %,
no crash, every 429 with Retry-After, and accepted latency at 2x load close to that at saturation.
A phase whose searches carry a budget class (scenario zipf-budgets) gets per class: latency percentiles,
the share over budget + 10 % (client and server time), reranked depth and why it was limited, and a
verdict "p99 within budget + 10 %". With /metrics scraped at a phase's start and end (run.py), it also
gets the caches' hit rates and the mean reranked depth over the phase.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

WARMUP_S = 60  # of the soak phase, counted as warm-up for memory along with the saturation phase
WINDOW_S = 10
OVER = 1.10  # a budget is kept when the answer takes at most 10 % more
LIMITS = ("budget", "queue", "deadline")


def _num(v: str | None, cast=float):
    return cast(v) if v not in (None, "") else None


def _rows(path: Path) -> list[dict]:
    """A record's rows; the budget columns (absent in older records, empty for other scenarios) are None."""
    with open(path) as f:
        return [{"t": float(r["t"]), "endpoint": r["endpoint"], "status": int(r["status"]), "ms": float(r["ms"]),
                 "retry_after": r["retry_after"], "error": r.get("error", ""),
                 "budget_ms": _num(r.get("budget_ms")), "query": _num(r.get("query"), int),
                 "reranked": _num(r.get("reranked"), int), "limited_by": r.get("limited_by") or None,
                 "server_ms": _num(r.get("server_ms"))} for r in csv.DictReader(f)]


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):,.0f}" if values else "-"


def phase_stats(rows: list[dict], seconds: float) -> dict:
    by = defaultdict(list)
    for r in rows:
        by[r["endpoint"]].append(r)
    by["all"] = rows
    out = {}
    for name, rs in sorted(by.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        ok = [r["ms"] for r in rs if r["status"] == 200]
        out[name] = {"n": len(rs), "rps": len(rs) / seconds, "ok_rps": len(ok) / seconds,
                     "p50": _pct(ok, 50), "p95": _pct(ok, 95), "p99": _pct(ok, 99),
                     "p95_value": float(np.percentile(ok, 95)) if ok else None,
                     "statuses": Counter(r["status"] for r in rs),
                     "error_rate": 1 - len(ok) / len(rs) if rs else 0.0}
    return out


def rss_summary(rss: list[tuple[float, int]], warm_until: float) -> dict | None:
    if not rss:
        return None
    after = [(t, b) for t, b in rss if t >= warm_until]
    if len(after) < 4:
        return None
    end = after[-1][0]
    first = [b for t, b in after if t < warm_until + WARMUP_S] or [after[0][1]]
    last = [b for t, b in after if t > end - WARMUP_S]
    base, final = float(np.mean(first)), float(np.mean(last))
    return {"start_mb": rss[0][1] / 2**20, "after_warmup_mb": base / 2**20, "end_mb": final / 2**20,
            "max_mb": max(b for _, b in rss) / 2**20, "growth": final / base - 1}


def write_report(folder: Path) -> Path:
    meta = json.loads((folder / "meta.json").read_text())
    rss = []
    if (folder / "rss.csv").exists():
        with open(folder / "rss.csv") as f:
            rss = [(float(r["t"]), int(r["rss"])) for r in csv.DictReader(f)]
    phases = [(p, _rows(folder / p["record"])) for p in meta["phases"]]
    lines = [f"# reprank {meta['kind']}: scenario `{meta['scenario']}`, {meta['date']}", "",
             _setup(meta), ""]
    stats = {}
    for p, rows in phases:
        seconds = p["end"] - p["start"]
        st = stats[p["name"]] = phase_stats(rows, seconds)
        lines += _phase_section(p, st, seconds, rows)
        lines += _budget_section(rows)
        lines += _cache_section(p, rows)
    warm_until = phases[-1][0]["start"] + (WARMUP_S if meta["kind"] == "soak" else 0)
    mem = rss_summary(rss, warm_until)
    if mem:
        growth = (f": growth after warm-up **{mem['growth']:+.1%}** (mean of the first {WARMUP_S} s after "
                  f"warm-up vs the last {WARMUP_S} s)" if meta["kind"] == "soak" else " (too short to judge growth)")
        lines += ["## Memory (server RSS, sampled every 2 s with psutil)", "",
                  f"start {mem['start_mb']:.0f} MB, after warm-up {mem['after_warmup_mb']:.0f} MB, "
                  f"end {mem['end_mb']:.0f} MB, max {mem['max_mb']:.0f} MB{growth}", ""]
    lines += [f"Server after the run: /healthz {'200' if meta['healthy_after'] else 'NOT answering'}; "
              f"exit status on SIGTERM: {meta['exit_code']}.", ""]
    if meta["kind"] == "soak":
        lines += _verdict(meta, phases, stats, mem)
    lines += ["![latency over time](latency.png)", ""]
    _plot(folder, phases, rss)
    report = folder / "report.md"
    report.write_text("\n".join(lines))
    return report


def _setup(meta: dict) -> str:
    env = ", ".join(f"`{k}={v}`" for k, v in meta["server_env"].items()) or "none"
    return (f"Server: {meta['url']} with the default models (bundled SmolLM2-135M encoder and reranker with their trained adapters, "
            f"{'/'.join(meta.get('dtypes') or ['dtype unrecorded'])} on CPU) over the embedded Qdrant Edge store holding the first {meta['docs']} documents of "
            f"samples/debian-1k; env overrides: {env}. Requests: searches take top 5 of {meta['candidates']} "
            f"candidates, reranks score {meta['candidates']} documents, embeddings send 4 passages. Machine: "
            f"{meta['cpus']} CPUs, load average at the end {meta['load_average'][0]:.1f} (the server and the "
            "load generator share these cores)." + _zipf(meta))


def _zipf(meta: dict) -> str:
    z = meta.get("zipf")
    return (f" Searches (zipf-budgets): queries drawn by Zipf's law (exponent {z['s']:g}) over "
            f"{z.get('ranks', 100):,} ranks (the 100 sample queries first, then new texts: a sample query with its "
            f"rank appended), budget classes {z['budgets']} ms picked uniformly, rerank on, seed {z['seed']}."
            if z else "")


def _phase_section(p: dict, st: dict, seconds: float, rows: list[dict]) -> list[str]:
    how = f"{p['user_rps']:.3f} requests/s each" if p["user_rps"] else "closed loop (next request on answer)"
    head = [f"## Phase: {p['name']} ({p['users']} users, {how}, {seconds:.0f} s)", ""]
    if "capacity_rps" in p:
        head += [f"Saturating throughput measured before: {p['capacity_rps']:.2f} accepted requests/s; "
                 f"offered here: {p['offered_rps']:.2f} requests/s (2x).", ""]
    table = ["| endpoint | requests | RPS | accepted RPS | p50 ms | p95 ms | p99 ms | error rate |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in st.items():
        table.append(f"| {name} | {s['n']} | {s['rps']:.2f} | {s['ok_rps']:.2f} | {s['p50']} | {s['p95']} | "
                     f"{s['p99']} | {s['error_rate']:.1%} |")
    codes = sorted({c for s in st.values() for c in s["statuses"]})
    status = ["| endpoint | " + " | ".join(str(c or "no answer") for c in codes) + " |",
              "|---|" + "---:|" * len(codes)]
    for name, s in st.items():
        status.append(f"| {name} | " + " | ".join(str(s["statuses"].get(c, 0)) for c in codes) + " |")
    rejected = [r for r in rows if r["status"] == 429]
    with_retry = sum(1 for r in rejected if r["retry_after"])
    tail = [f"429 answers with a Retry-After header: {with_retry} of {len(rejected)}.", ""] if rejected else []
    unanswered = Counter(r["error"] or "not recorded" for r in rows if r["status"] == 0)
    if unanswered:
        tail += ["No answer (connection failed): " + "; ".join(f"{n} x {e}" for e, n in unanswered.items()), ""]
    return head + table + ["", "Answers by status:", ""] + status + [""] + tail


def _budget_section(rows: list[dict]) -> list[str]:
    """Per budget class: latency, over-budget shares, reranked depth, limits; and the p99 verdict."""
    classes = sorted({r["budget_ms"] for r in rows if r["budget_ms"] is not None})
    if not classes:
        return []
    seen, repeat = set(), {}
    for r in sorted(rows, key=lambda r: r["t"]):
        if r["query"] is not None:
            repeat[id(r)] = r["query"] in seen
            seen.add(r["query"])
    table = ["### Latency budgets", "",
             "Accepted (200) answers per budget class; over budget: took more than the budget + 10 %, by the "
             "client's clock or the server's own `timings_ms.total`; reranked: `usage.reranked`, also split by "
             "a query new to the phase / sent before in it; limited by: `usage.rerank_limited_by`.", "",
             "| budget | answers | p50 ms | p95 ms | p99 ms | server p99 ms | over budget (client) | "
             "over budget (server) | mean reranked | new / repeated query | limited: none / " + " / ".join(LIMITS)
             + " |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdict = ["| criterion | result | figure |", "|---|---|---|"]
    for b in classes:
        ok = [r for r in rows if r["budget_ms"] == b and r["status"] == 200]
        ms = [r["ms"] for r in ok]
        server = [r["server_ms"] for r in ok if r["server_ms"] is not None]
        depth = [r["reranked"] for r in ok if r["reranked"] is not None]
        by_new = [[r["reranked"] for r in ok if r["reranked"] is not None and repeat.get(id(r)) is again]
                  for again in (False, True)]
        limited = Counter(r["limited_by"] for r in ok)
        table.append(
            f"| {b:g} ms | {len(ok)} | {_pct(ms, 50)} | {_pct(ms, 95)} | {_pct(ms, 99)} | {_pct(server, 99)} | "
            f"{_share(ms, b)} | {_share(server, b)} | {_mean(depth)} | {_mean(by_new[0])} / {_mean(by_new[1])} | "
            + " / ".join(f"{limited.get(k, 0) / len(ok):.0%}" if ok else "-" for k in (None, *LIMITS)) + " |")
        p99 = float(np.percentile(ms, 99)) if ms else None
        verdict.append(f"| p99 within budget + 10 %: {b:g} ms class | "
                       f"{'-' if p99 is None else 'PASS' if p99 <= OVER * b else 'FAIL'} | "
                       f"p99 {'-' if p99 is None else f'{p99:,.0f}'} ms vs {OVER * b:,.0f} ms |")
    return table + ["", "Verdict:", ""] + verdict + [""]


def _share(values: list[float], budget: float) -> str:
    return f"{sum(v > OVER * budget for v in values) / len(values):.1%}" if values else "-"


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.1f}" if values else "-"


def _cache_section(p: dict, rows: list[dict]) -> list[str]:
    """The difference of the /metrics counters scraped at the phase's start and end (run.py)."""
    start, end = p.get("metrics_start"), p.get("metrics_end")
    if start is None or end is None:
        return []
    delta = {k: v - start.get(k, 0.0) for k, v in end.items()}
    out = ["### Caches and rerank depth (/metrics, end of the phase less its start)", ""]
    caches = sorted({k.split('cache="', 1)[1].split('"', 1)[0] for k in delta if 'cache="' in k})
    for c in caches:
        hits = delta.get(f'reprank_cache_hits_total{{cache="{c}"}}', 0.0)
        misses = delta.get(f'reprank_cache_misses_total{{cache="{c}"}}', 0.0)
        rate = f"**{hits / (hits + misses):.1%}**" if hits + misses else "-"
        out.append(f"- {c} cache: hit rate {rate} ({hits:,.0f} hits, {misses:,.0f} misses)")
    queries = sorted((r for r in rows if r["query"] is not None), key=lambda r: r["t"])
    if queries:
        distinct = len({r["query"] for r in queries})
        out.append(f"- queries sent: {len(queries)}, distinct {distinct}: {1 - distinct / len(queries):.1%} "
                   "repeat one sent before (about the best a query-embedding cache can do from empty)")
    count = delta.get("reprank_search_reranked_count", 0.0)
    if count:
        out.append(f"- reranked depth (histogram `reprank_search_reranked`): mean "
                   f"**{delta.get('reprank_search_reranked_sum', 0.0) / count:.1f}** over {count:,.0f} searches")
    limited = {k.split('reason="', 1)[1].split('"', 1)[0]: v for k, v in delta.items()
               if k.startswith("reprank_search_budget_limited_total") and v}
    if limited:
        out.append("- searches limited (`reprank_search_budget_limited_total`): "
                   + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(limited.items())))
    return out + [""] if len(out) > 2 else []


def _verdict(meta: dict, phases, stats: dict, mem: dict | None) -> list[str]:
    sat, soak = stats[phases[0][0]["name"]], stats[phases[-1][0]["name"]]
    rows = phases[-1][1]
    rejected = [r for r in rows if r["status"] == 429]
    checks = [
        ("RSS growth after warm-up < 5 %", mem is not None and mem["growth"] < 0.05,
         f"{mem['growth']:+.1%}" if mem else "no samples"),
        ("no crash: healthy after the soak, exit 0 on SIGTERM", meta["healthy_after"] and meta["exit_code"] == 0,
         f"healthz {'ok' if meta['healthy_after'] else 'down'}, exit {meta['exit_code']}"),
        ("excess load gets 429 with Retry-After", bool(rejected) and all(r["retry_after"] for r in rejected),
         f"{len(rejected)} answers 429, {sum(1 for r in rejected if r['retry_after'])} with Retry-After"),
        ("no 5xx", not any(r["status"] >= 500 for _, rs in phases for r in rs),
         str(sorted({r['status'] for _, rs in phases for r in rs if r['status'] >= 500}) or "none")),
    ]
    lat = []
    for name, s in soak.items():
        base = sat.get(name, {}).get("p95_value")
        if name != "all" and base and s["p95_value"]:
            lat.append(f"{name} {s['p95_value'] / base:.2f}x")
    checks.append(("accepted requests keep their latency (p95 at 2x / p95 at saturation)", None,
                   ", ".join(lat) or "-"))
    out = ["## Verdict", "", "| criterion | result | figure |", "|---|---|---|"]
    for name, ok, fig in checks:
        out.append(f"| {name} | {'see figure' if ok is None else 'PASS' if ok else 'FAIL'} | {fig} |")
    return out + [""]


def _plot(folder: Path, phases, rss) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for _, rs in phases for r in rs]
    if not rows:
        return
    t0 = min(p["start"] for p, _ in phases)
    fig, axes = plt.subplots(3 if rss else 2, 1, figsize=(11, 9 if rss else 6.5), sharex=True)
    ax = axes[0]
    for name in sorted({r["endpoint"] for r in rows}):
        ok = sorted((r["t"] - t0, r["ms"]) for r in rows if r["endpoint"] == name and r["status"] == 200)
        if not ok:
            continue
        ax.scatter([t for t, _ in ok], [ms for _, ms in ok], s=4, alpha=0.35)
        windows = _windows(ok)
        ax.plot([w for w, _ in windows], [np.percentile(v, 95) for _, v in windows], label=f"{name} p95")
    ax.set_yscale("log")
    ax.set_ylabel("latency of 200s (ms)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    for label, pick in (("200", lambda s: s == 200), ("429", lambda s: s == 429),
                        ("other", lambda s: s not in (200, 429))):
        pts = [(r["t"] - t0, 1) for r in rows if pick(r["status"])]
        if pts:
            windows = _windows(sorted(pts))
            ax.plot([w for w, _ in windows], [len(v) / WINDOW_S for _, v in windows], label=label)
    ax.set_ylabel(f"answers/s ({WINDOW_S} s windows)")
    ax.legend(fontsize=8, loc="upper left")
    if rss:
        axes[2].plot([t - t0 for t, _ in rss], [b / 2**20 for _, b in rss])
        axes[2].set_ylabel("server RSS (MB)")
    for p, _ in phases:
        for a in axes:
            a.axvline(p["start"] - t0, color="grey", linestyle=":")
        axes[0].annotate(p["name"], (p["start"] - t0, 1), xycoords=("data", "axes fraction"), fontsize=8,
                         va="top")
    axes[-1].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(folder / "latency.png", dpi=90)
    plt.close(fig)


def _windows(points: list[tuple[float, float]]) -> list[tuple[float, list[float]]]:
    by = defaultdict(list)
    for t, v in points:
        by[int(t // WINDOW_S)].append(v)
    return [((k + 0.5) * WINDOW_S, v) for k, v in sorted(by.items())]
