"""Bad and odd input against the real server process (tiny random model, real embedded store): a schemathesis
fuzz of the OpenAPI schema (no 5xx, every response as documented), Unicode edge cases, empty and
huge inputs. Each gets its documented answer (README: errors), and the server stays healthy."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from helpers import assert_error, docs_server, post, reprank_cmd
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    srv = docs_server(tiny_llama, tmp_path_factory,
                      {"REPRANK_MAX_INPUTS": "16", "REPRANK_MAX_DOCUMENTS": "1000", "REPRANK_MAX_BODY_BYTES": "2000000"})
    yield srv
    srv.stop()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_openapi(server, mode):
    """Generated requests, valid and invalid, to every operation: never a 5xx, every answer as documented."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/embeddings", "/v1/rerank", "/v1/search", "/v1/models"}
    for op in operations:
        if mode is GenerationMode.NEGATIVE and op.method.upper() != "POST":
            continue  # no body or parameter to make invalid
        @given(case=op.as_strategy(mode))
        @settings(max_examples=20, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=CHECKS, timeout=60)

        check()


ODD_TEXTS = {
    "combining": "Cafe\u0301 na\u0308ive \u1e9b\u0323 Z\u0351\u0352\u0353algo",
    "rtl": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202eoverride\u202c",
    "emoji": "\U0001f980 rust \U0001f469\u200d\U0001f469\u200d\U0001f467 family \U0001f1eb\U0001f1f7",
    "nul": "before\u0000after",
    "zero-width": "\u200b\ufeff",
    "cjk": "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
}


@pytest.mark.parametrize("name", ODD_TEXTS)
def test_odd_unicode_is_served(server, name):
    text = ODD_TEXTS[name]
    emb = post(server, "/v1/embeddings", {"input": [text, "plain"]})
    assert emb.status_code == 200, emb.text
    rr = post(server, "/v1/rerank", {"query": text, "documents": [text, "plain"], "return_documents": True})
    assert rr.status_code == 200, rr.text
    assert {r["document"]["text"] for r in rr.json()["results"]} == {text, "plain"}  # echoed intact
    for hybrid in (False, True):
        s = post(server, "/v1/search", {"query": text, "top_k": 3, "candidates": 3, "hybrid": hybrid})
        assert s.status_code == 200, s.text


@pytest.mark.parametrize("raw", [b'{"input": "\\ud800"}', b'{"input": ["ok", "a\\udc00b"]}',
                                 b'{"query": "q", "documents": [{"text": "\\udfff"}]}'])
def test_lone_surrogates_are_422(server, raw):
    for path in ("/v1/embeddings", "/v1/rerank", "/v1/search"):
        r = httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"})
        assert "surrogate" in assert_error(r, 422)["message"]


def test_body_that_is_not_utf8_is_400(server):
    r = httpx.post(server.url + "/v1/embeddings", content=b'{"input": "\xff\xfe"}',
                   headers={"content-type": "application/json"})
    assert_error(r, 400)


@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u3000\u2003"])
def test_empty_and_whitespace_only_are_400(server, blank):
    assert_error(post(server, "/v1/embeddings", {"input": blank}), 400)
    assert_error(post(server, "/v1/rerank", {"query": "q", "documents": ["ok", blank]}), 400)
    assert_error(post(server, "/v1/rerank", {"query": blank, "documents": ["ok"]}), 400)
    assert_error(post(server, "/v1/search", {"query": blank}), 400)


def test_huge_inputs(server):
    big = "word " * 20_000  # 100,000 characters
    assert_error(post(server, "/v1/embeddings", {"input": big}), 413)
    assert_error(post(server, "/v1/rerank", {"query": "q", "documents": [big]}), 413)
    assert_error(post(server, "/v1/search", {"query": big}), 413)
    ok = post(server, "/v1/embeddings", {"input": big, "truncate": True})
    assert ok.status_code == 200 and ok.json()["usage"]["truncated_tokens"] > 10_000
    ok = post(server, "/v1/search", {"query": big, "truncate": True, "rerank": False, "top_k": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["truncated_tokens"] > 10_000
    err = assert_error(post(server, "/v1/rerank", {"query": "q", "documents": ["d"] * 10_000}), 413)
    assert "10000 documents" in err["message"]
    body = b'{"input": "' + b"x" * 2_100_000 + b'"}'  # over REPRANK_MAX_BODY_BYTES: refused unparsed
    assert_error(httpx.post(server.url + "/v1/embeddings", content=body,
                            headers={"content-type": "application/json"}, timeout=60), 413)
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert post(server, "/v1/search", {"query": "library", "top_k": 3}).status_code == 200


def test_cli_search_against_the_running_server(server):
    import subprocess

    out = subprocess.run(reprank_cmd("search", "library for parsing", "--url", server.url, "--top-k", "3"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "reranked=True" in lines[0] and len(lines) == 2 + 3 and "doc-" in lines[2]
