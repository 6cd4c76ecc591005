"""API keys, body limits, /metrics on its own port and no outbound connections, on the real server.

The server runs under an audit hook (a sitecustomize on PYTHONPATH) that records every socket
connection and name lookup to anything but loopback, so "nothing phones home" is observed, not assumed.
"""

from __future__ import annotations

import hashlib
import os
import sys

import httpx
import pytest
from helpers import Server, assert_error, free_port, tiny_model_args

KEYS = {"env": "rk-env-3f9a1c2b7d", "file": "rk-file-8e2d4c6a0b", "digest": "rk-digest-5b7c9e1f3a"}
WRONG = "rk-wrong-0a1b2c3d4e"

AUDIT_HOOK = '''
import os, sys
_log = os.environ.get("REPRANK_TEST_AUDIT_LOG")
_LOCAL = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "", None)

def _hook(event, args):
    if event == "socket.connect":
        addr = args[1]
        host = addr[0] if isinstance(addr, tuple) else None
        if isinstance(addr, tuple) and host not in _LOCAL:
            _write(f"connect {addr!r}")
    elif event == "socket.getaddrinfo" and args[0] not in _LOCAL:
        _write(f"getaddrinfo {args[0]!r}")

def _write(line):
    with open(_log, "a") as f:
        f.write(line + "\\n")

if _log:
    _write("hook installed")
    sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(AUDIT_HOOK)
    keys_file = tmp / "keys.txt"
    digest = hashlib.sha256(KEYS["digest"].encode()).hexdigest()
    keys_file.write_text(f"# API keys\n{KEYS['file']}\n\nsha256:{digest}  # stored as a digest only\n")
    metrics_port = free_port()
    env = {"REPRANK_API_KEYS": KEYS["env"], "REPRANK_API_KEYS_FILE": str(keys_file),
           "REPRANK_MAX_BODY_BYTES": "50000", "REPRANK_METRICS_PORT": str(metrics_port),
           "REPRANK_TEST_AUDIT_LOG": str(tmp / "audit.log"),
           "PYTHONPATH": os.pathsep.join([str(tmp / "site"), os.environ.get("PYTHONPATH", "")])}
    srv = Server(["--data-dir", str(tmp / "data"), *tiny_model_args(tiny_llama)], env)
    srv.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    srv.audit_log = tmp / "audit.log"
    yield srv
    srv.stop()


def call(server, path="/v1/embeddings", payload=None, headers=None, **kw):
    return httpx.post(server.url + path, json=payload or {"input": "hello"}, headers=headers or {}, timeout=60, **kw)


def test_keys_are_required_on_every_data_route(server):
    for path, payload in [("/v1/embeddings", {"input": "x"}), ("/v1/rerank", {"query": "q", "documents": ["d"]}),
                          ("/v1/search", {"query": "q"})]:
        err = assert_error(call(server, path, payload), 401)
        assert err["type"] == "unauthorized"
    assert assert_error(httpx.get(server.url + "/v1/models"), 401)
    r = call(server, headers={"Authorization": f"Bearer {WRONG}"})
    assert_error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(call(server, headers={"Authorization": f"Basic {KEYS['env']}"}), 401)


def test_keys_from_env_file_and_digest_in_every_header_form(server):
    assert call(server, headers={"Authorization": f"Bearer {KEYS['env']}"}).status_code == 200
    assert call(server, headers={"x-api-key": KEYS["file"]}).status_code == 200
    assert call(server, headers={"api-key": KEYS["digest"]}).status_code == 200
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS["env"])
    assert len(client.embeddings.create(model="smollm2", input=["x"]).data) == 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=WRONG).embeddings.create(model="smollm2", input=["x"])


def test_health_and_readiness_are_public_metrics_on_their_own_port(server):
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert_error(httpx.get(server.url + "/metrics"), 404)
    text = httpx.get(server.metrics_url).text
    assert 'reprank_requests_total{route="other",status="401"}' in text


def test_keys_never_reach_logs_or_error_bodies(server):
    bodies = [call(server, headers={"Authorization": f"Bearer {WRONG}"}).text,
              call(server, headers={"x-api-key": WRONG}).text,
              call(server, "/v1/embeddings", {"input": ""}, headers={"x-api-key": KEYS["env"]}).text]
    server.log.seek(0)
    output = server.log.read()
    assert '" 401' in output and '" 400' in output  # the access log is in there
    for secret in [*KEYS.values(), WRONG, hashlib.sha256(KEYS["env"].encode()).hexdigest()]:
        assert secret not in output
        assert all(secret not in b for b in bodies)


def test_body_limit_before_parsing(server):
    auth = {"x-api-key": KEYS["env"], "content-type": "application/json"}
    big = b'{"input": "' + b"x" * 60_000 + b'"}'
    err = assert_error(httpx.post(server.url + "/v1/embeddings", content=big, headers=auth), 413)
    assert "50000 bytes" in err["message"]

    def chunked():  # no Content-Length: the limit counts the bytes as they stream in
        yield b'{"input": "'
        for _ in range(30):
            yield b"y" * 2000
        yield b'"}'

    assert_error(httpx.post(server.url + "/v1/embeddings", content=chunked(), headers=auth), 413)
    assert_error(httpx.post(server.url + "/v1/embeddings", content=big, headers={}), 401)  # key first
    assert call(server, headers={"x-api-key": KEYS["env"]}).status_code == 200


def test_no_outbound_connections(server):
    call(server, "/v1/search", {"query": "q"}, headers={"x-api-key": KEYS["env"]})
    call(server, "/v1/rerank", {"query": "q", "documents": ["d"]}, headers={"x-api-key": KEYS["env"]})
    lines = server.audit_log.read_text().splitlines()
    assert lines[0] == "hook installed" and lines[1:] == []


def test_telemetry_is_off_in_the_app_process(monkeypatch):
    from service.app import create_app
    from service.security import NO_TELEMETRY

    for k in NO_TELEMETRY:
        monkeypatch.delenv(k, raising=False)  # and restored afterwards
    create_app()
    assert {k: os.environ[k] for k in NO_TELEMETRY} == NO_TELEMETRY
    assert "gradio" not in sys.modules
