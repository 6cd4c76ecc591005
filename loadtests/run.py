"""Run a headless Locust load test (or a soak) against a local `reprank serve`, then write the report.

    python -m loadtests.run --kind loadtest --scenario rag-mix --users 4 --duration 60
    python -m loadtests.run --kind soak --duration 600          # calibrate saturation, then 2x for 10 min
    python -m loadtests.run --kind loadtest --scenario zipf-budgets --users 4 --duration 60   # budgets, caches

Without --url it indexes the first --docs documents of samples/debian-1k into data/loadtest (once;
the indexer skips what is there), serves them with the default models (or --server-env overrides),
samples the server's RSS with psutil, stops it with SIGTERM and records its exit status. A soak first
measures the saturating throughput C with a closed loop of --calibration-users users, then offers 2C
(3x the users, each at 2C/users requests/s) for --duration seconds. /metrics is scraped at the start and
end of each phase (cache hit rates, reranked depth). The report lands in loadtests/reports/<date>/<kind>/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from loadtests.report import write_report

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
USERS = {"rag-mix": "RagMixUser", "search-rerank": "SearchRerankUser", "search": "SearchUser",
         "embeddings": "EmbeddingsUser", "rerank": "RerankUser", "zipf-budgets": "ZipfBudgetUser"}
CANDIDATES = {"zipf-budgets": 20}  # the default --candidates of a scenario (else 5): budgets must bite
SCRAPED = ("reprank_cache_hits_total", "reprank_cache_misses_total", "reprank_search_reranked_sum",
           "reprank_search_reranked_count", "reprank_search_budget_limited_total")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_data(data: Path, docs: int) -> None:
    """The first `docs` sample documents indexed with the default encoder (skipped when present)."""
    data.mkdir(parents=True, exist_ok=True)
    corpus = data / f"corpus-{docs}.jsonl"
    with open(ROOT / "samples/debian-1k/corpus.jsonl") as src:
        corpus.write_text("".join(line for _, line in zip(range(docs), src, strict=False)))
    subprocess.run([str(BIN / "reprank"), "index", "--corpus", str(corpus), "--collection", "loadtest",
                    "--data-dir", str(data), "--no-progress"], check=True)


class LocalServer:
    def __init__(self, data: Path, env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(BIN / "reprank"), "serve", "--data-dir", str(data), "--collection", "loadtest",
             "--port", str(self.port)], env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise SystemExit(f"server not ready in 600 s; see {log}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class RssSampler(threading.Thread):
    """The server's resident set size every `every` seconds, as (unix time, bytes)."""

    def __init__(self, pid: int, every: float = 2.0):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.every, self.samples = psutil.Process(pid), every, []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.samples.append((time.time(), self.proc.memory_info().rss))
            except Exception:  # the process is gone: the report says so
                return
            self._done.wait(self.every)

    def stop(self) -> list:
        self._done.set()
        self.join(10)
        return self.samples


def scrape(url: str) -> dict[str, float] | None:
    """The counters of SCRAPED from /metrics, keyed like `name{label="value"}`; None when not served."""
    from prometheus_client.parser import text_string_to_metric_families

    headers = _auth()
    try:
        r = httpx.get(url + "/metrics", headers=headers, timeout=10)
    except httpx.TransportError:
        return None
    if r.status_code != 200:
        return None
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name in SCRAPED:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def run_locust(url: str, scenario: str, users: int, duration: int, record: Path, env: dict) -> dict:
    """One headless Locust phase; returns its name, time span and settings for the report, and the
    scraped counters at its start and end (metrics_start, metrics_end)."""
    metrics_start = scrape(url)
    start = time.time()
    cmd = [str(BIN / "locust"), "-f", str(ROOT / "loadtests/locustfile.py"), "--headless", "--only-summary",
           "-u", str(users), "-r", str(max(1, users)), "-t", f"{duration}s", "--host", url,
           "--loglevel", "WARNING", "--stop-timeout", "120", USERS[scenario]]
    subprocess.run(cmd, env={**os.environ, **env, "LOADTEST_RECORD": str(record)}, check=False)
    end = time.time()
    return {"start": start, "end": end, "users": users, "record": record.name,
            "user_rps": float(env.get("LOADTEST_USER_RPS", 0)), "metrics_start": metrics_start,
            "metrics_end": scrape(url)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["loadtest", "soak"], default="loadtest")
    p.add_argument("--scenario", choices=list(USERS), default="rag-mix")
    p.add_argument("--users", type=int, default=4, help="loadtest: closed-loop users")
    p.add_argument("--duration", type=int, default=60, help="seconds of load (soak: of the 2x phase)")
    p.add_argument("--calibration-users", type=int, default=8, help="soak: closed-loop users that saturate")
    p.add_argument("--calibration", type=int, default=90, help="soak: seconds of the saturation phase")
    p.add_argument("--candidates", type=int, help="reranked per search (and docs per rerank); default 5, "
                   "zipf-budgets 20")
    p.add_argument("--budgets", help='zipf-budgets: budget classes in ms (default $LOADTEST_BUDGETS or "300,1000,3000")')
    p.add_argument("--zipf-s", type=float, help="zipf-budgets: Zipf exponent (default $LOADTEST_ZIPF_S or 1.1)")
    p.add_argument("--docs", type=int, default=200, help="sample documents indexed for the test")
    p.add_argument("--url", help="an already running server (no RSS, no shutdown check)")
    p.add_argument("--server-env", nargs="*", default=[], metavar="K=V", help="env of the served process")
    p.add_argument("--out", type=Path, help="default: loadtests/reports/<date>/<kind>")
    args = p.parse_args(argv)

    out = args.out or ROOT / "loadtests/reports" / dt.date.today().isoformat() / args.kind
    out.mkdir(parents=True, exist_ok=True)
    if args.candidates is None:
        args.candidates = CANDIDATES.get(args.scenario, 5)
    env = {"LOADTEST_CANDIDATES": str(args.candidates), "LOADTEST_RERANK_DOCS": str(args.candidates)}
    if args.budgets:
        env["LOADTEST_BUDGETS"] = args.budgets
    if args.zipf_s is not None:
        env["LOADTEST_ZIPF_S"] = str(args.zipf_s)
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    server = sampler = None
    if args.url:
        url = args.url
    else:
        data = ROOT / "data/loadtest"
        prepare_data(data, args.docs)
        server = LocalServer(data, server_env, out / "server.log")
        url, sampler = server.url, RssSampler(server.proc.pid)
        sampler.start()
    phases = []
    try:
        if args.kind == "loadtest":
            phases.append({"name": "load", **run_locust(url, args.scenario, args.users, args.duration,
                                                         out / "requests-load.csv", env)})
        else:
            cal = run_locust(url, args.scenario, args.calibration_users, args.calibration,
                             out / "requests-saturation.csv", env)
            phases.append({"name": "saturation", **cal})
            capacity = count_ok(out / "requests-saturation.csv") / (cal["end"] - cal["start"])
            # 2C offered by 3x the calibration's users at 2C/users each: a user then waits 1.5x the
            # saturated latency (Little's law) between sends, so slow answers do not thin the offer
            users = 3 * args.calibration_users
            rate = 2 * capacity / users
            soak_env = {**env, "LOADTEST_USER_RPS": f"{rate:.4f}"}
            phases.append({"name": "2x saturation", "capacity_rps": capacity, "offered_rps": users * rate,
                           **run_locust(url, args.scenario, users, args.duration, out / "requests-2x.csv",
                                        soak_env)})
        healthy = _healthy(url)
        dtypes = _dtypes(url)
    finally:
        rss = sampler.stop() if sampler else []
        exit_code = server.stop() if server else None
    meta = {"kind": args.kind, "scenario": args.scenario, "url": url if args.url else "local reprank serve",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "candidates": args.candidates,
            "docs": args.docs, "server_env": server_env, "phases": phases, "healthy_after": healthy,
            "exit_code": exit_code, "cpus": os.cpu_count(), "load_average": os.getloadavg(), "dtypes": dtypes}
    if args.scenario == "zipf-budgets":
        meta["zipf"] = {"s": float(env.get("LOADTEST_ZIPF_S", os.environ.get("LOADTEST_ZIPF_S", "1.1"))),
                        "ranks": int(os.environ.get("LOADTEST_ZIPF_RANKS", "10000")),
                        "budgets": env.get("LOADTEST_BUDGETS", os.environ.get("LOADTEST_BUDGETS", "300,1000,3000")),
                        "seed": int(os.environ.get("LOADTEST_SEED", "1"))}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    if rss:
        (out / "rss.csv").write_text("t,rss\n" + "".join(f"{t:.1f},{b}\n" for t, b in rss))
    report = write_report(out)
    print(f"wrote {report} and {out / 'latency.png'}")
    return 0


def count_ok(record: Path) -> int:
    import csv

    with open(record) as f:
        return sum(1 for row in csv.DictReader(f) if row["status"] == "200")


def _auth() -> dict:
    return {"Authorization": f"Bearer {os.environ['LOADTEST_API_KEY']}"} if os.environ.get("LOADTEST_API_KEY") else {}


def _dtypes(url: str) -> list[str]:
    """The served models' dtypes, as their /v1/models cards say."""
    try:
        cards = httpx.get(url + "/v1/models", headers=_auth(), timeout=10).json().get("data", [])
    except (httpx.TransportError, ValueError):
        return []
    return sorted({c.get("dtype") for c in cards if c.get("dtype")})


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
