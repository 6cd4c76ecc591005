"""A small Qdrant REST server for fault tests: `python fake_qdrant.py PORT`.

There is no Qdrant server binary here, so this real process on 127.0.0.1 answers the few REST
calls reprank's ServerStore makes on its read path, backed by qdrant-client's own local engine
(`:memory:`), with one collection "docs" of 30 random points in reprank's layout. Tests kill it and
start it again on the same port to see the service fail over to 503 and recover.
"""

from __future__ import annotations

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from qdrant_client import models as qm

from store import Document
from store.server import ServerStore

DIM = 64


def make_store() -> ServerStore:
    store = ServerStore(location=":memory:")
    store.create_collection("docs", DIM, {"encoder": "fake"})
    docs = [Document(f"doc-{i}", f"fake document number {i}", title=f"t{i}") for i in range(30)]
    vectors = np.random.default_rng(0).normal(size=(len(docs), DIM)).astype(np.float32)
    store.upsert("docs", docs, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return store


class Handler(BaseHTTPRequestHandler):
    client = None  # the local-mode QdrantClient behind the REST surface

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, result) -> None:
        payload = {"result": result, "status": "ok" if status == 200 else {"error": str(result)}, "time": 0.0}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dump(self, model):
        return model.model_dump(mode="json", exclude_none=True)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/":
            return self._send(200, {"title": "qdrant - vector search engine", "version": "1.16.0"})
        if path in ("/aliases", "/collections/docs/aliases"):
            return self._send(200, {"aliases": []})
        if path == "/collections":
            return self._send(200, {"collections": [{"name": "docs"}]})
        m = re.fullmatch(r"/collections/([^/]+)(/exists)?", path)
        if m and m.group(2):
            return self._send(200, {"exists": m.group(1) == "docs"})
        if m and m.group(1) == "docs":
            return self._send(200, self._dump(self.client.get_collection("docs")))
        self._send(404, f"Not found: {path}")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if path == "/collections/docs/points/query/batch":
            searches = [qm.QueryRequest.model_validate(r) for r in body["searches"]]
            return self._send(200, [self._dump(r) for r in self.client.query_batch_points("docs", searches)])
        if path == "/collections/docs/points/count":
            return self._send(200, {"count": self.client.count("docs", exact=True).count})
        self._send(404, f"Not found: {path}")


def main(port: int) -> None:
    Handler.client = make_store()._client
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
