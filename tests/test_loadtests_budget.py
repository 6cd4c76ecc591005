"""loadtests/: the zipf-budgets scenario's record columns and report sections (no server, no load)."""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("matplotlib")

from loadtests.report import write_report  # noqa: E402

# loadtests/locustfile.py's record columns (not imported: importing locust monkey-patches ssl under pytest)
COLUMNS = ["t", "endpoint", "status", "ms", "retry_after", "error", "budget_ms", "query", "reranked", "limited_by",
           "server_ms"]


def _meta(tmp_path, metrics_start=None, metrics_end=None) -> None:
    phase = {"name": "load", "start": 0.0, "end": 10.0, "users": 2, "record": "requests-load.csv", "user_rps": 0.0,
             "metrics_start": metrics_start, "metrics_end": metrics_end}
    (tmp_path / "meta.json").write_text(json.dumps({
        "kind": "loadtest", "scenario": "zipf-budgets", "url": "local reprank serve", "date": "2025-01-01",
        "candidates": 20, "docs": 200, "server_env": {}, "phases": [phase], "healthy_after": True, "exit_code": 0,
        "cpus": 2, "load_average": [1.0, 1.0, 1.0]}))


def test_budget_classes_caches_and_verdict_are_reported(tmp_path):
    rows = []
    for i in range(20):  # 300 ms class: 19 in time, 1 slow (p99 fails); 3000 ms class all in time
        rows.append([f"{i}.0", "search budget=300ms", 200, "900.0" if i == 0 else "250.0", "", "",
                     "300", i % 3, 2, "budget", "240.0"])
        rows.append([f"{i}.5", "search budget=3000ms", 200, "1500.0", "", "", "3000", i % 3, 14, "", "1400.0"])
    rows.append(["30.0", "search budget=300ms", 429, "5.0", "1", "", "300", 0, "", "", ""])
    with open(tmp_path / "requests-load.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    start = {'reprank_cache_hits_total{cache="embedding"}': 5.0, 'reprank_cache_misses_total{cache="embedding"}': 5.0,
             "reprank_search_reranked_sum": 10.0, "reprank_search_reranked_count": 1.0}
    end = {'reprank_cache_hits_total{cache="embedding"}': 42.0, 'reprank_cache_misses_total{cache="embedding"}': 8.0,
           "reprank_search_reranked_sum": 170.0, "reprank_search_reranked_count": 21.0,
           'reprank_search_budget_limited_total{reason="budget"}': 20.0}
    _meta(tmp_path, start, end)
    text = write_report(tmp_path).read_text()
    assert "| 300 ms | 20 |" in text and "| 3000 ms | 20 |" in text
    assert "| p99 within budget + 10 %: 300 ms class | FAIL |" in text
    assert "| p99 within budget + 10 %: 3000 ms class | PASS |" in text
    assert "5.0%" in text  # over budget (client) of the 300 ms class: 1 of 20
    assert "embedding cache: hit rate **92.5%** (37 hits, 3 misses)" in text
    assert "mean **8.0** over 20 searches" in text and "budget 20" in text
    assert "distinct 3" in text


def test_records_without_budget_columns_still_report(tmp_path):
    with open(tmp_path / "requests-load.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "endpoint", "status", "ms", "retry_after", "error"])
        w.writerows([["1.0", "search", 200, "60.0", "", ""], ["2.0", "search", 200, "70.0", "", ""]])
    _meta(tmp_path)
    text = write_report(tmp_path).read_text()
    assert "| search | 2 |" in text and "Latency budgets" not in text and "Caches" not in text
