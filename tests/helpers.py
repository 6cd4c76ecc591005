"""What the tests share: `reprank serve` as a real process or in this process, requests, the DOCS corpus."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from indexer.run import collection_info, index_corpus
from models import open_encoder
from store import Document
from store.edge import EdgeStore

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reprank_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "reprank"), *args]


def tiny_model_args(folder: Path) -> list[str]:
    return ["--model", str(folder), "--model-preset", "smollm2",
            "--reranker", str(folder), "--reranker-preset", "smollm2-reranker"]


class Server:
    """`reprank serve` as a real subprocess on a free 127.0.0.1 port."""

    def __init__(self, args: list[str], env: dict | None = None, timeout: float = 120, port: int | None = None):
        self.port = port or free_port()  # a given port: a restart where clients already point
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"reprank-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(reprank_cmd("serve", "--port", str(self.port), *args),
                                     env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        output = self.output()  # read before stop() closes the log
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s: {output}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.url + path, **{"timeout": 60, **kw})


class InProcess:
    """The app `reprank serve` runs, in this process behind an ASGI client (lifespan included): for
    contract tests that need no separate process. `client` is an httpx.Client, so real client
    libraries (openai) can take it as their http_client."""

    def __init__(self, settings, timeout: float = 120):
        from fastapi.testclient import TestClient

        from service.app import create_app

        self.url = "http://testserver"
        self.client = TestClient(create_app(settings), base_url=self.url, raise_server_exceptions=False)
        self.client.__enter__()
        deadline = time.time() + timeout
        while (r := self.client.get("/readyz")).status_code != 200:
            if time.time() > deadline or "loading failed" in r.text:
                self.stop()
                raise RuntimeError(f"app not ready: {r.text}")
            time.sleep(0.1)

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def stop(self) -> None:
        self.client.__exit__(None, None, None)


def tiny_settings(folder: Path, **overrides):
    """Settings serving the tiny model as encoder (smollm2) and query-likelihood reranker."""
    from service.settings import Settings

    return Settings(model=str(folder), model_preset="smollm2", reranker=str(folder),
                    reranker_preset="smollm2-reranker", **overrides)


SECTIONS = ["python", "admin", "libs"]
DOCS = [
    Document(f"doc-{i}", f"Package number {i} in section {SECTIONS[i % 3]}: "
             + ("a library for parsing data files. " * (1 + i % 4)), title=f"pkg{i}",
             metadata={"section": SECTIONS[i % 3], "size": i})
    for i in range(30)
]


def indexed_data(tiny_llama, tmp_path_factory):
    """A fresh embedded store with DOCS in collection "docs", encoded by the tiny model, and an empty
    "stale" collection as an earlier training of the same model (another revision) would have left."""
    data = tmp_path_factory.mktemp("data")
    with EdgeStore(data) as store, open_encoder(str(tiny_llama), "smollm2") as enc:
        index_corpus(DOCS, enc, store, "docs", progress=False)
        stale = collection_info(enc.model.source, enc.preset.name) | {"revision": "0123456789ab"}
        store.create_collection("stale", enc.dim, stale)
    return data


def docs_server(tiny_llama, tmp_path_factory, env: dict) -> Server:
    """`reprank serve` over a fresh store holding DOCS, the tiny model as encoder and reranker."""
    data = indexed_data(tiny_llama, tmp_path_factory)
    return Server(["--data-dir", str(data), "--collection", "docs", *tiny_model_args(tiny_llama)], env)


def post(server, path, payload, **kw):
    return server.request("POST", path, json=payload, **kw)


def get(server, path, **kw):
    return server.request("GET", path, **kw)


def assert_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code"} and err["code"] == status and err["message"]
    return err
