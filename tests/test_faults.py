"""Qdrant server down and back: 503 with a clear message while it is gone, recovery without a restart.

The server under test talks to tests/fake_qdrant.py (a real HTTP process on 127.0.0.1 speaking the
Qdrant REST calls of the read path) through qdrant-client; the test kills it mid-traffic and starts
it again on the same port.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import Server, assert_error, free_port, post, tiny_model_args

FAKE = Path(__file__).parent / "fake_qdrant.py"
ROOT = Path(__file__).parent.parent


class FakeQdrant:
    def __init__(self, port: int):
        self.proc = subprocess.Popen([sys.executable, str(FAKE), str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                                     env={"PYTHONPATH": str(ROOT)}, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def qdrant_port():
    return free_port()


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory, qdrant_port):
    fake = FakeQdrant(qdrant_port)
    srv = Server(["--qdrant-url", f"http://127.0.0.1:{qdrant_port}", "--collection", "docs",
                  "--data-dir", str(tmp_path_factory.mktemp("unused")), *tiny_model_args(tiny_llama)])
    srv.fake = fake
    yield srv
    srv.stop()
    fake.kill()


SEARCH = {"query": "fake document", "top_k": 3, "rerank": False}


def test_qdrant_killed_mid_traffic_then_back(server, qdrant_port):
    assert post(server, "/v1/search", SEARCH).status_code == 200
    statuses: list[int] = []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            statuses.append(post(server, "/v1/search", SEARCH).status_code)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        server.fake.kill()
        time.sleep(1.0)
        r = post(server, "/v1/search", SEARCH)
        err = assert_error(r, 503)
        assert f"cannot reach Qdrant at http://127.0.0.1:{qdrant_port}" in err["message"]
        assert int(r.headers["retry-after"]) >= 1
        assert httpx.get(server.url + "/healthz").status_code == 200
        assert post(server, "/v1/embeddings", {"input": "still encoding"}).status_code == 200

        server.fake = FakeQdrant(qdrant_port)  # back on the same port; the service was not restarted
        deadline = time.time() + 30
        while (r := post(server, "/v1/search", SEARCH)).status_code != 200:
            assert time.time() < deadline, r.text
            time.sleep(0.2)
        assert [h["id"] for h in r.json()["results"]][0].startswith("doc-")
    finally:
        stop.set()
        worker.join(60)
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
