"""The chart's alert rules run by Prometheus's own rule engine: `promtool test rules` on the rules Helm
renders, with input series under which each alert must fire and others under which it must stay quiet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from test_deploy import NAMESPACE, RELEASE, one, render

PROMTOOL = shutil.which("promtool")
RULE_VALUES = {"metrics": {"prometheusRule": {"enabled": True}}}  # otherwise the default values
SVC = {"namespace": NAMESPACE, "service": RELEASE}  # what the rules' selector ($sel) matches
POD = "reprank-gateway-6d5f9c7b8-x2k4q"
NEW_POD = "reprank-gateway-6d5f9c7b8-p7mzn"  # the same Deployment after a restart
MODEL = "/models/rankllama-v1-7b-lora-passage"  # the model label is the model's name


@dataclass
class Case:
    """Input series, one sample a minute, and the alerts firing at `at` (none: the alert stays quiet)."""

    name: str
    series: list[dict]
    at: str = "20m"
    fires: list[tuple[dict, str]] = field(default_factory=list)  # (the alert's labels but severity, summary)


def s(name: str, values: str, **labels: str) -> dict:
    """One input series. `values` in promtool's notation, a sample a minute: '0+10x30' is 0, 10, ... 300
    (31 samples), '_x90' 90 minutes without a sample (a pod that is not there yet)."""
    labels = {**SVC, "pod": POD, **labels}
    return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


def latency(route: str, per_bucket: dict[str, str], **labels: str) -> list[dict]:
    return [s("reprank_request_seconds_bucket", v, route=route, le=le, **labels) for le, v in per_bucket.items()]


SLOW = {"0.5": "0+0x30", "1": "0+0x30", "2.5": "0+0x30", "5": "0+10x30", "+Inf": "0+10x30"}  # 2.5-5 s
FAST = {"0.5": "0+10x30", "1": "0+10x30", "2.5": "0+10x30", "5": "0+10x30", "+Inf": "0+10x30"}  # under 0.5 s


def cache(name: str, hits: str | None, misses: str, pod: str = POD) -> list[dict]:
    """A cache's counters on one pod; hits None: no hits series at all (service/cache.py creates both at
    the first lookup, but an exporter that creates it at the first hit must still read as a ratio of 0)."""
    out = [s("reprank_cache_misses_total", misses, cache=name, pod=pod)]
    return out + ([s("reprank_cache_hits_total", hits, cache=name, pod=pod)] if hits else [])


# the first 90 minutes on POD: 80 hits and 20 misses a minute (a hit ratio of 80 %), then POD is gone
WARM_UNTIL_RESTART = {"hits": "0+80x90", "misses": "0+20x90"}

CASES: dict[str, list[Case]] = {
    "RepRankHighP99Latency": [
        Case("/v1/search answers in 2.5-5 s", latency("/v1/search", SLOW),
             fires=[({**SVC, "route": "/v1/search"}, "reprank p99 latency of /v1/search is 4.975s")]),
        Case("/v1 fast; another release's service is slow",
             latency("/v1/search", FAST) + latency("/v1/search", SLOW, service="other-app")),
    ],
    "RepRankHigh5xxRate": [
        Case("5 of 105 /v1 requests a minute get 503", [
            s("reprank_requests_total", "0+100x30", route="/v1/search", status="200"),
            s("reprank_requests_total", "0+5x30", route="/v1/search", status="503")],
             fires=[(SVC, "reprank reprank answers 4.762% of /v1 requests with 5xx")]),
        Case("1 in 1000 /v1 requests gets 500; /readyz's 503s do not count", [
            s("reprank_requests_total", "0+1000x30", route="/v1/search", status="200"),
            s("reprank_requests_total", "0+1x30", route="/v1/search", status="500"),
            s("reprank_requests_total", "0+50x30", route="/readyz", status="503")]),
    ],
    "RepRankQueueSaturated": [
        Case("900 of 1000 tokens pending", [s("reprank_queue_tokens", "900+0x30", model=MODEL),
                                            s("reprank_queue_limit_tokens", "1000+0x30", model=MODEL)],
             fires=[({"namespace": NAMESPACE, "pod": POD, "model": MODEL},
                     f"reprank queue of {MODEL} on {POD} is 90% full")]),
        Case("200 of 1000 tokens pending", [s("reprank_queue_tokens", "200+0x30", model=MODEL),
                                            s("reprank_queue_limit_tokens", "1000+0x30", model=MODEL)]),
    ],
    "RepRankRejectingRequests": [
        Case("3 requests a minute get 429", [s("reprank_rejected_total", "0+3x30", model=MODEL)],
             fires=[({**SVC, "model": MODEL}, f"reprank reprank refuses {MODEL} requests with 429 (queue full)")]),
        Case("rejections long ago, none now", [s("reprank_rejected_total", "7+0x30", model=MODEL)]),
    ],
    "RepRankWorkerFailures": [
        Case("10 of 100 rerank calls a minute fail", [
            s("reprank_worker_seconds_count", "0+100x30", task="rerank"),
            s("reprank_worker_failures_total", "0+6x30", task="rerank", reason="timeout"),
            s("reprank_worker_failures_total", "0+4x30", task="rerank", reason="worker_error")],
             fires=[({**SVC, "task": "rerank"}, "10% of gateway calls to rerank workers fail")]),
        Case("1 of 100 rerank calls a minute fails", [
            s("reprank_worker_seconds_count", "0+100x30", task="rerank"),
            s("reprank_worker_failures_total", "0+1x30", task="rerank", reason="timeout")]),
    ],
    "RepRankNotReady": [
        Case("never ready", [s("reprank_ready", "0+0x30")],
             fires=[({"namespace": NAMESPACE, "pod": POD},
                     f"reprank pod {POD} has not been ready for 15 minutes (models not loaded)")]),
        Case("ready after 5 minutes of loading", [s("reprank_ready", "0+0x5 1+0x25")]),
    ],
    "RepRankBudgetLimitedSearches": [
        Case("35 of 100 reranked searches a minute cut short (20 budget, 15 queue)", [
            s("reprank_search_reranked_count", "0+100x30"),
            s("reprank_search_budget_limited_total", "0+20x30", reason="budget"),
            s("reprank_search_budget_limited_total", "0+15x30", reason="queue")],
             fires=[(SVC, "reprank reprank reranks fewer candidates than planned in 35% of reranked searches")]),
        Case("5 of 100 reranked searches a minute cut short", [
            s("reprank_search_reranked_count", "0+100x30"),
            s("reprank_search_budget_limited_total", "0+5x30", reason="budget")]),
    ],
    "RepRankCacheCollapse": [
        # The pod restarts at 91m: on the new pod the embedding cache answers 10 % (was 80 %) and the
        # rerank cache answers nothing (no hits series at all); 100 lookups a minute each.
        Case("caches stay cold after a restart",
             cache("embedding", **WARM_UNTIL_RESTART) + cache("rerank", **WARM_UNTIL_RESTART)
             + cache("embedding", "_x91 0+10x39", "_x91 0+90x39", pod=NEW_POD)
             + cache("rerank", None, "_x91 0+100x39", pod=NEW_POD), at="125m",
             fires=[({**SVC, "cache": "embedding"}, "reprank embedding cache hit ratio on reprank fell to 10%"),
                    ({**SVC, "cache": "rerank"}, "reprank rerank cache hit ratio on reprank fell to 0%")]),
        # embedding steady at 80 %; rerank fell from 10 % to 2 %, but 10 % never made it matter
        Case("a steady cache, and one that never mattered",
             cache("embedding", "0+80x130", "0+20x130")
             + cache("rerank", "0+10x90 902+2x39", "0+90x90 8198+98x39"), at="125m"),
        Case("no traffic after a restart",
             cache("rerank", **WARM_UNTIL_RESTART) + cache("rerank", None, "_x91 0+0x39", pod=NEW_POD), at="125m"),
    ],
}


@pytest.fixture(scope="module")
def rule_groups() -> list[dict]:
    return one(render(RULE_VALUES), "PrometheusRule", RELEASE)["spec"]["groups"]


@pytest.fixture(scope="module")
def rules(rule_groups) -> dict[str, dict]:
    return {r["alert"]: r for g in rule_groups for r in g["rules"] if "alert" in r}


@pytest.fixture
def rules_file(rule_groups, tmp_path) -> Path:
    """The PrometheusRule's spec as a plain Prometheus rules file."""
    path = tmp_path / "reprank-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not PROMTOOL:
        why = "promtool not found: .ci/run installs it (Debian's prometheus package: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must run the alert rule tests")
        pytest.skip(why)
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=300)


def expected_annotations(rule: dict, labels: dict, summary: str) -> dict:
    """The rule's annotations as Prometheus fills them in: the summary as the case states it, the rest
    (which may name $labels but not $value) with the alert's labels filled in."""
    out = {}
    for key, text in rule.get("annotations", {}).items():
        out[key] = summary if key == "summary" else re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]],
                                                           text)
        assert "{{" not in out[key], (rule["alert"], key, out[key])
    return out


def promtool_tests(rules: dict[str, dict], rules_file: Path) -> dict:
    tests = []
    for alert, cases in CASES.items():
        rule = rules[alert]
        for case in cases:
            exp = [{"exp_labels": {**labels, **rule.get("labels", {})},
                    "exp_annotations": expected_annotations(rule, labels, summary)} for labels, summary in case.fires]
            tests.append({"name": f"{alert}: {case.name}", "interval": "1m", "input_series": case.series,
                          "alert_rule_test": [{"eval_time": case.at, "alertname": alert, "exp_alerts": exp}]})
    return {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}


def test_every_alert_has_a_firing_and_a_quiet_case(rules):
    assert set(rules) == set(CASES), f"alerts without test cases: {sorted(set(rules) - set(CASES))}; " \
                                     f"cases for no alert: {sorted(set(CASES) - set(rules))}"
    for alert, cases in CASES.items():
        assert any(c.fires for c in cases), f"{alert}: no case where it fires"
        assert any(not c.fires for c in cases), f"{alert}: no case where it stays quiet"


def test_rules_file_passes_promtool_check(rules_file):
    out = promtool("check", "rules", str(rules_file))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(CASES)} rules found" in out.stdout, out.stdout


def test_alerts_fire_and_stay_quiet_under_promtool(rules, rules_file, tmp_path):
    tests = tmp_path / "reprank-rules.test.yaml"
    tests.write_text(yaml.safe_dump(promtool_tests(rules, rules_file), sort_keys=False, width=200))
    out = promtool("test", "rules", str(tests))
    assert out.returncode == 0, f"promtool test rules {tests}:\n{out.stdout}{out.stderr}"
