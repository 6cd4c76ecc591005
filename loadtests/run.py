"""Run a headless Locust load test (or a soak) against a local `reprank serve`, then write the report.

    python -m loadtests.run --kind loadtest --scenario rag-mix --users 4 --duration 60
    python -m loadtests.run --kind soak --duration 600          # calibrate saturation, then 2x for 10 min

Without --url it indexes the first --docs documents of samples/debian-1k into data/loadtest (once;
the indexer skips what is there), serves them with the default models (or --server-env overrides),
samples the server's RSS with psutil, stops it with SIGTERM and records its exit status. A soak first
measures the saturating throughput C with a closed loop of --calibration-users users, then offers 2C
(3x the users, each at 2C/users requests/s) for --duration seconds. The report lands in loadtests/reports/<date>/<kind>/.
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
         "embeddings": "EmbeddingsUser", "rerank": "RerankUser"}


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


def run_locust(url: str, scenario: str, users: int, duration: int, record: Path, env: dict) -> dict:
    """One headless Locust phase; returns its name, time span and settings for the report."""
    start = time.time()
    cmd = [str(BIN / "locust"), "-f", str(ROOT / "loadtests/locustfile.py"), "--headless", "--only-summary",
           "-u", str(users), "-r", str(max(1, users)), "-t", f"{duration}s", "--host", url,
           "--loglevel", "WARNING", "--stop-timeout", "120", USERS[scenario]]
    subprocess.run(cmd, env={**os.environ, **env, "LOADTEST_RECORD": str(record)}, check=False)
    return {"start": start, "end": time.time(), "users": users, "record": record.name,
            "user_rps": float(env.get("LOADTEST_USER_RPS", 0))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["loadtest", "soak"], default="loadtest")
    p.add_argument("--scenario", choices=list(USERS), default="rag-mix")
    p.add_argument("--users", type=int, default=4, help="loadtest: closed-loop users")
    p.add_argument("--duration", type=int, default=60, help="seconds of load (soak: of the 2x phase)")
    p.add_argument("--calibration-users", type=int, default=8, help="soak: closed-loop users that saturate")
    p.add_argument("--calibration", type=int, default=90, help="soak: seconds of the saturation phase")
    p.add_argument("--candidates", type=int, default=5, help="reranked per search (and docs per rerank)")
    p.add_argument("--docs", type=int, default=200, help="sample documents indexed for the test")
    p.add_argument("--url", help="an already running server (no RSS, no shutdown check)")
    p.add_argument("--server-env", nargs="*", default=[], metavar="K=V", help="env of the served process")
    p.add_argument("--out", type=Path, help="default: loadtests/reports/<date>/<kind>")
    args = p.parse_args(argv)

    out = args.out or ROOT / "loadtests/reports" / dt.date.today().isoformat() / args.kind
    out.mkdir(parents=True, exist_ok=True)
    env = {"LOADTEST_CANDIDATES": str(args.candidates), "LOADTEST_RERANK_DOCS": str(args.candidates)}
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
    finally:
        rss = sampler.stop() if sampler else []
        exit_code = server.stop() if server else None
    meta = {"kind": args.kind, "scenario": args.scenario, "url": url if args.url else "local reprank serve",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "candidates": args.candidates,
            "docs": args.docs, "server_env": server_env, "phases": phases, "healthy_after": healthy,
            "exit_code": exit_code, "cpus": os.cpu_count(), "load_average": os.getloadavg()}
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


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
