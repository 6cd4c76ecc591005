"""Collections over REST, through real HTTP to `reprank serve`, on the embedded store and on qdrant-client's
local mode (the server store's code path): upsert, replace, delete, long documents, concurrent clients,
and a server killed mid-write."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import httpx
import pytest
from helpers import Server, assert_error, get, indexed_data, post, tiny_model_args

from store.edge import EdgeStore

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning")


@pytest.fixture(scope="module", params=["edge", "server"])
def server(request, tiny_llama, tmp_path_factory):
    data = indexed_data(tiny_llama, tmp_path_factory)  # "docs" (30 documents) and "stale" (another revision)
    store = ["--data-dir", str(data)] if request.param == "edge" else ["--qdrant-url", ":memory:"]
    srv = Server([*store, "--collection", "docs", *tiny_model_args(tiny_llama)], {"REPRANK_MAX_INPUTS": "64"})
    yield srv
    srv.stop()


def upsert(server, collection, docs, **kw):
    return post(server, f"/v1/collections/{collection}/documents", {"documents": docs, **kw})


def doomed_upsert(server, collection, docs) -> None:
    """An upsert whose server is killed under it: its connection error is the expected outcome."""
    try:
        upsert(server, collection, docs)
    except httpx.TransportError:
        pass


def bm25_ids(server, collection, word, top_k=20, **kw) -> list[tuple[str, int]]:
    """(document id, passage) of the hits of a one-word search (hybrid: the tiny model's vectors are
    random, BM25 finds the word)."""
    r = post(server, "/v1/search", {"query": word, "collection": collection, "rerank": False, "top_k": top_k, **kw})
    assert r.status_code == 200, r.text
    return [(h["id"], h["passage"]) for h in r.json()["results"] if word in h["text"]]


def info(server, collection) -> dict:
    r = get(server, f"/v1/collections/{collection}")
    assert r.status_code == 200, r.text
    return r.json()


def test_upsert_replace_delete(server):
    created = upsert(server, "notes", [{"id": "n1", "text": "a note about the walrus", "metadata": {"k": 1}},
                                       {"id": "n2", "text": "a note about the narwhal", "title": "Sea"}])
    assert created.status_code == 200, created.text
    assert created.json()["created"] and created.json()["documents"] == created.json()["passages"] == 2
    first = info(server, "notes")
    assert (first["documents"], first["passages"], first["dimensions"], first["preset"]) == (2, 2, 64, "smollm2")
    assert first["revision"] and first["created"] <= first["updated"]
    assert "notes" in [c["name"] for c in get(server, "/v1/collections").json()["data"]]
    assert bm25_ids(server, "notes", "walrus") == [("n1", 0)]

    again = upsert(server, "notes", [{"id": "n1", "text": "a note about the kumquat"}])
    assert again.status_code == 200 and not again.json()["created"]
    assert bm25_ids(server, "notes", "walrus") == [] and bm25_ids(server, "notes", "kumquat") == [("n1", 0)]
    assert info(server, "notes")["documents"] == 2  # replaced, not added

    r = server.request("DELETE", "/v1/collections/notes/documents/n1")
    assert r.status_code == 200 and r.json() == {"collection": "notes", "deleted": 1, "not_found": []}
    assert bm25_ids(server, "notes", "kumquat") == [] and info(server, "notes")["documents"] == 1
    assert_error(server.request("DELETE", "/v1/collections/notes/documents/n1"), 404)
    many = post(server, "/v1/collections/notes/documents/delete", {"ids": ["n2", "nope"]})
    assert many.json() == {"collection": "notes", "deleted": 1, "not_found": ["nope"]}
    assert info(server, "notes")["documents"] == 0


def test_bad_writes_get_the_api_errors(server):
    assert_error(upsert(server, "notes2", []), 400)
    assert_error(upsert(server, "notes2", [{"id": "a", "text": "  "}]), 400)
    assert_error(upsert(server, "notes2", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]), 400)
    assert_error(upsert(server, "notes2", [{"id": f"d{i}", "text": "x"} for i in range(65)]), 413)
    assert_error(upsert(server, "notes2", [{"id": "a", "text": "x", "colour": "red"}]), 422)
    assert_error(upsert(server, "bad/name", [{"id": "a", "text": "x"}]), 404)  # no such route
    assert_error(upsert(server, "-bad", [{"id": "a", "text": "x"}]), 422)
    r = server.request("POST", "/v1/collections/notes2/documents", content=b"{not json",
                       headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert_error(get(server, "/v1/collections/missing"), 404)
    assert_error(server.request("DELETE", "/v1/collections/missing/documents/a"), 404)
    if "stale" in [c["name"] for c in get(server, "/v1/collections").json()["data"]]:  # the embedded store's
        stale = upsert(server, "stale", [{"id": "a", "text": "x"}])  # built by another revision of the model
        assert "revision" in assert_error(stale, 409)["message"]
    assert get(server, "/v1/collections/notes2").status_code == 404  # nothing was created by the refusals


def test_a_write_to_a_collection_another_process_holds_is_503(tiny_llama, tmp_path):
    """The embedded store lets one process open a collection: a write the server cannot take is refused
    with the API's error body, and the server stays healthy."""
    args = ["--data-dir", str(tmp_path), *tiny_model_args(tiny_llama)]
    with EdgeStore(tmp_path) as holder:
        holder.create_collection("held", 64, {})
        holder.count("held")  # opens its shard: this process now holds the lock
        srv = Server(args)
        try:
            err = assert_error(upsert(srv, "held", [{"id": "a", "text": "x"}]), 503)
            assert "another process" in err["message"]
            assert upsert(srv, "free", [{"id": "a", "text": "x"}]).status_code == 200
        finally:
            srv.stop()


def test_a_fact_in_the_last_passage_of_a_long_document_is_found(server):
    words = [f"w{i % 97}" for i in range(2400)]  # about 5,000 tokens of the bundled tokenizer
    text = " ".join(words) + " the zeppelinfact is here"
    r = upsert(server, "long", [{"id": "big", "text": text, "title": "Long"}, {"id": "small", "text": "w1 w2 w3"}])
    assert r.status_code == 200, r.text
    assert r.json()["passages"] > 8 and info(server, "long")["documents"] == 2
    out = post(server, "/v1/search", {"query": "zeppelinfact", "collection": "long", "rerank": False,
                                      "top_k": 5}).json()["results"]
    hit = next(h for h in out if "zeppelinfact" in h["text"])
    assert hit["id"] == "big" and hit["passage"] == r.json()["passages"] - 2  # "small" is the last passage
    start, end = hit["span"]
    assert text[start:end] == hit["text"] and end == len(text)
    grouped = post(server, "/v1/search", {"query": "zeppelinfact w5", "collection": "long", "rerank": False,
                                          "top_k": 10, "group_by": "document"}).json()["results"]
    assert sorted(h["id"] for h in grouped) == ["big", "small"]  # each document once
    reranked = post(server, "/v1/search", {"query": "zeppelinfact", "collection": "long", "top_k": 3,
                                           "group_by": "document"}).json()
    assert reranked["reranked"] and len({h["id"] for h in reranked["results"]}) == len(reranked["results"])


def test_concurrent_writers_and_searchers_lose_and_duplicate_nothing(server):
    """Four clients upsert (and re-upsert) documents while two search; at the end every document holds
    its last written text exactly once."""
    last: dict[str, str] = {}
    lock = threading.Lock()
    errors: list[str] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        rng = random.Random(w)
        for round_ in range(6):
            docs = [{"id": f"c{w}-{i}", "text": f"writer{w} round{round_} doc{i} token{rng.randint(0, 9)}"}
                    for i in rng.sample(range(8), 4)]
            r = upsert(server, "busy", docs)
            if r.status_code != 200:
                errors.append(r.text)
                continue
            with lock:
                last.update({d["id"]: d["text"] for d in docs})

    def searcher() -> None:
        while not stop.is_set():
            r = post(server, "/v1/search", {"query": "writer1 round2", "collection": "busy", "rerank": False})
            if r.status_code not in (200, 404):  # 404 until the first write creates the collection
                errors.append(r.text)
            ids = [h["id"] for h in r.json().get("results", [])] if r.status_code == 200 else []
            if len(ids) != len(set(ids)):
                errors.append(f"a document twice in one answer: {ids}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    readers = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    for t in readers:
        t.join(30)
    assert not errors, errors[:3]
    assert info(server, "busy")["documents"] == len(last) == info(server, "busy")["passages"]
    for doc_id, text in last.items():
        word = text.split()[0]  # writerN: in every text of that writer's documents
        hits = post(server, "/v1/search", {"query": word, "collection": "busy", "rerank": False, "top_k": 50,
                                           "hybrid": True}).json()["results"]
        assert [h["text"] for h in hits if h["id"] == doc_id] == [text]


def test_a_write_killed_midway_leaves_each_document_wholly_old_or_new(tiny_llama, tmp_path):
    """SIGKILL the server at several moments of one large upsert that replaces every document (each of
    several passages); after a restart each document shows all its old passages or all its new ones."""
    old = [{"id": f"k{i}", "text": " ".join(f"oldmarker filler{j}" for j in range(60)), "metadata": {"doc": i}}
           for i in range(12)]
    new = [{"id": f"k{i}", "text": " ".join(f"newmarker other{j}" for j in range(45)), "metadata": {"doc": i}}
           for i in range(12)]
    env = {"REPRANK_PASSAGE_TOKENS": "40", "REPRANK_MAX_INPUTS": "1024"}  # several passages a document
    args = ["--data-dir", str(tmp_path), *tiny_model_args(tiny_llama)]

    def visible(srv, i) -> tuple[str, int]:
        """Which version of document i a search sees, and how many of its passages (all of them, by filter)."""
        hits = post(srv, "/v1/search", {"query": "filler other", "collection": "crash", "rerank": False,
                                        "top_k": 100, "filter": {"doc": i}}).json()["results"]
        kinds = {("old" if "oldmarker" in h["text"] else "new") for h in hits}
        assert len(kinds) == 1 and sorted(h["passage"] for h in hits) == list(range(len(hits))), (
            i, [(h["passage"], h["text"][:12]) for h in hits])
        return kinds.pop(), len(hits)

    srv = Server(args, env)
    try:
        start = time.perf_counter()  # as the first request of a fresh server, like each one below
        n_new = upsert(srv, "crash-probe", new).json()["passages"] // len(new)
        took = time.perf_counter() - start
        n_old = upsert(srv, "crash", old).json()["passages"] // len(old)
    finally:
        srv.stop()
    assert n_old > 2 and n_new > 2 and n_old != n_new
    seen = set()
    for fraction in (0.6, 0.85, 0.95, 1.0, 1.05, 1.15, 3.0):  # around the end, where the store writes
        srv = Server(args, env)
        try:
            threading.Thread(target=doomed_upsert, args=(srv, "crash", new), daemon=True).start()
            time.sleep(took * fraction)
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(10)
        finally:
            srv.log.close()
        srv = Server(args, env)
        try:
            for i in range(len(old)):
                kind, n = visible(srv, i)
                assert n == (n_old if kind == "old" else n_new), (fraction, i, kind, n)
                seen.add(kind)
            assert info(srv, "crash")["documents"] == len(old)
            upsert(srv, "crash", old)  # back to the old texts for the next kill
        finally:
            srv.stop()
    assert seen == {"old", "new"}  # killed before the write and after it, at least
    with EdgeStore(tmp_path) as store:
        assert store.count("crash") == len(old)
