"""The collection layout on both backends: Qdrant Edge in a temp dir, and qdrant-client's ":memory:" mode."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from store import (
    CollectionNotFound,
    Document,
    Hit,
    StoreConfig,
    StoreLocked,
    StoreMismatch,
    StoreUnavailable,
    open_store,
)
from store.edge import EdgeStore
from store.filters import parse_filter
from store.fusion import QDRANT_RRF_K, rrf
from store.layout import point_id
from store.server import ServerStore

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning"),
    pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning"),
]
DIM = 8
ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["python", "libs", "docs"]


def make_docs(n: int = 12) -> list[Document]:
    return [
        Document(
            doc_id=f"d{i}",
            title=f"Title {i}",
            text=f"passage number {i} about retrieval" + (" with a xylophone" if i == 7 else ""),
            metadata={"section": SECTIONS[i % 3], "size": i * 10, "n": i},
        )
        for i in range(n)
    ]


def make_vectors(n: int = 12, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path):
    s = EdgeStore(tmp_path) if request.param == "edge" else ServerStore(location=":memory:")
    yield s
    s.close()


@pytest.fixture
def filled(store):
    store.create_collection("docs", DIM, {"model": "m1", "preset": "repllama"})
    store.upsert("docs", make_docs(), make_vectors())
    return store


def test_point_id_is_deterministic_uuid():
    assert point_id("a") == point_id("a") != point_id("b")
    assert len(point_id("a")) == 36


def test_create_is_idempotent_and_rejects_other_dim_or_model(store):
    info = {"model": "m1", "preset": "repllama"}
    store.create_collection("docs", DIM, info)
    store.create_collection("docs", DIM, info)
    assert store.list_collections() == ["docs"]
    got = store.collection_info("docs")
    assert got.pop("created") <= got.pop("updated")  # ISO 8601 UTC: ordered as text
    assert got == {"name": "docs", "dim": DIM, "count": 0, "passages": 0, "info": info}
    with pytest.raises(StoreMismatch, match="16-d"):
        store.create_collection("docs", 16, info)
    with pytest.raises(StoreMismatch, match="model"):
        store.create_collection("docs", DIM, {"model": "m2"})


def test_a_retrained_model_under_the_same_name_is_refused(store):
    """The revision (a fingerprint of the weights) tells a retrained adapter from the one that built a
    collection: it may neither add vectors nor search; a collection from before revisions passes."""
    built = {"model": "bundled:enc", "preset": "p", "revision": "aaa"}
    store.create_collection("docs", DIM, built)
    store.check_info("docs", {"preset": "p", "revision": "aaa"})
    with pytest.raises(StoreMismatch, match="revision 'aaa', not 'bbb': re-index"):
        store.check_info("docs", {"preset": "p", "revision": "bbb"})
    with pytest.raises(StoreMismatch, match="preset 'p', not 'q'"):
        store.check_info("docs", {"preset": "q", "revision": "aaa"})
    with pytest.raises(StoreMismatch, match="revision"):
        store.create_collection("docs", DIM, built | {"revision": "bbb"})
    store.create_collection("old", DIM, {"model": "bundled:enc", "preset": "p"})
    store.check_info("old", {"preset": "p", "revision": "bbb"})
    with pytest.raises(CollectionNotFound):
        store.check_info("missing", {"preset": "p"})


def test_upsert_count_and_idempotent_reupsert(filled):
    assert filled.count("docs") == 12
    filled.upsert("docs", make_docs(), make_vectors(seed=1))
    assert filled.count("docs") == 12
    assert filled.collection_info("docs")["count"] == 12


def test_existing_doc_ids(filled):
    assert filled.existing_doc_ids("docs", ["d1", "d11", "nope", "d99"]) == {"d1", "d11"}
    assert filled.existing_doc_ids("docs", []) == set()


def test_query_nearest_first_with_payload(filled):
    vectors = make_vectors()
    hits = filled.query("docs", vectors[5], limit=3)
    assert len(hits) == 3 and hits[0].doc_id == "d5"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert isinstance(hits[0].payload.pop("version"), int)
    assert hits[0].payload == {
        "doc_id": "d5",
        "title": "Title 5",
        "text": "passage number 5 about retrieval",
        "metadata": {"section": "docs", "size": 50, "n": 5},
        "passage": 0,
        "span": [0, 32],
    }


def test_wrong_dimension_is_a_mismatch(filled):
    with pytest.raises(StoreMismatch):
        filled.query("docs", np.ones(DIM + 1), limit=3)
    with pytest.raises(StoreMismatch):
        filled.upsert("docs", make_docs(2), np.ones((2, DIM + 1)))


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"section": "python"}, {"d0", "d3", "d6", "d9"}),
        ({"section": ["python", "libs"]}, {f"d{i}" for i in range(12) if i % 3 != 2}),
        ({"n": [1, 2]}, {"d1", "d2"}),
        ({"size": {"gte": 20, "lt": 50}}, {"d2", "d3", "d4"}),
        ({"section": "docs", "size": {"gt": 50}}, {"d8", "d11"}),
    ],
)
def test_filters(filled, flt, expected):
    hits = filled.query("docs", make_vectors()[0], limit=12, filter=flt)
    assert {h.doc_id for h in hits} == expected


@pytest.mark.parametrize(
    "flt",
    [
        {"section": {"eq": "x"}},
        {"section": {}},
        {"section": []},
        {"section": ["a", 1]},
        {"section": [["a"]]},
        {"size": {"gte": "10"}},
        {"size": 1.5},
        {"section": None},
        {"bad key!": "x"},
        ["section"],
    ],
)
def test_bad_filters_raise_value_error(filled, flt):
    with pytest.raises(ValueError):
        parse_filter(flt)
    with pytest.raises(ValueError):
        filled.query("docs", make_vectors()[0], limit=3, filter=flt)


def test_hybrid_puts_the_rare_word_on_top(filled):
    query = make_vectors()[2]  # the dense side points at d2, the text at d7's rare word
    assert filled.query("docs", query, limit=12)[0].doc_id == "d2"
    hits = filled.query("docs", query, limit=12, hybrid_text="xylophone")
    assert hits[0].doc_id == "d7"
    assert filled.query("docs", query, limit=12, hybrid_text="the of")[0].doc_id == "d2"  # stopwords only
    assert (
        filled.query("docs", query, limit=12, hybrid_text="xylophone", filter={"section": "libs"})[0].doc_id
        == "d7"
    )
    assert "d7" not in {
        h.doc_id
        for h in filled.query("docs", query, limit=12, hybrid_text="xylophone", filter={"section": "python"})
    }


def test_hybrid_fusion_is_qdrants_rrf_with_ties_by_doc_id(filled):
    """1/(2 + position) summed over the dense and BM25 lists (Qdrant's formula, QDRANT_RRF_K = 2), and
    equal fused scores ordered by doc id, so a ranking never depends on the process that made it."""
    query = make_vectors()[2]
    dense = filled.query("docs", query, limit=12)
    lexical = filled.query_bm25("docs", "xylophone", limit=12)
    hits = filled.query("docs", query, limit=12, hybrid_text="xylophone")
    expect = {h.doc_id: 1 / (QDRANT_RRF_K + i) for i, h in enumerate(dense)}
    for i, h in enumerate(lexical):
        expect[h.doc_id] = expect.get(h.doc_id, 0.0) + 1 / (QDRANT_RRF_K + i)
    assert {h.doc_id: h.score for h in hits} == pytest.approx(expect)
    assert [h.doc_id for h in hits] == sorted(expect, key=lambda d: (-expect[d], d))
    a, b = (Hit(d, 1.0, {}) for d in ("b", "a"))
    assert [h.doc_id for h in rrf([[a, b], [b, a]], limit=2)] == ["a", "b"]  # a tie: doc id decides


def test_bm25_only_query(filled):
    hits = filled.query_bm25("docs", "xylophone", limit=12)
    assert [h.doc_id for h in hits] == ["d7"]  # only d7 has the word, whatever the dense vectors say
    assert hits[0].payload["title"] == "Title 7" and hits[0].score > 0
    assert len(filled.query_bm25("docs", "passage retrieval", limit=5)) == 5
    assert filled.query_bm25("docs", "the of", limit=5) == []  # stopwords only
    assert filled.query_bm25("docs", "xylophone", limit=5, filter={"section": "python"}) == []
    with pytest.raises(CollectionNotFound):
        filled.query_bm25("missing", "xylophone", limit=5)


def test_unknown_collection(store):
    for call in (
        lambda: store.count("missing"),
        lambda: store.collection_info("missing"),
        lambda: store.query("missing", np.ones(DIM), limit=3),
        lambda: store.upsert("missing", make_docs(1), make_vectors(1)),
        lambda: store.existing_doc_ids("missing", ["d1"]),
    ):
        with pytest.raises(CollectionNotFound):
            call()


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_bad_collection_name(store, name):
    with pytest.raises(ValueError):
        store.create_collection(name, DIM, {})
    with pytest.raises(ValueError):
        store.count(name)


def test_open_store_picks_backend(tmp_path):
    assert isinstance(open_store(StoreConfig(tmp_path)), EdgeStore)
    server = open_store(StoreConfig(tmp_path, url="http://127.0.0.1:6333"))
    assert isinstance(server, ServerStore)
    server.close()


# ---------------------------------------------------------------------------------------------------------
# Edge only: one process per shard, and durability across SIGKILL


def _child(script: str, data_dir: Path) -> subprocess.Popen:
    """A python process running `script` with `store` = EdgeStore(data_dir); it prints a line when ready."""
    code = f"import sys, time\nfrom store import Document\nfrom store.edge import EdgeStore\nstore = EdgeStore({str(data_dir)!r})\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code + textwrap.dedent(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        pytest.fail(f"child failed: {line!r} {proc.stderr.read()}")
    return proc


def test_edge_second_process_gets_store_locked(tmp_path):
    first = EdgeStore(tmp_path)
    first.create_collection("docs", DIM, {})
    first.upsert("docs", make_docs(3), make_vectors(3))
    first.close()
    child = _child('store.count("docs")\nprint("ready", flush=True)\ntime.sleep(60)\n', tmp_path)
    try:
        second = EdgeStore(tmp_path)
        with pytest.raises(StoreLocked, match="--qdrant-url") as err:
            second.query("docs", np.ones(DIM), limit=3)
        assert str(tmp_path / "collections" / "docs" / "shard") in str(err.value)
        assert second.list_collections() == ["docs"]
    finally:
        child.kill()
        child.wait()
    assert second.count("docs") == 3  # the lock goes with the process
    second.close()


def test_edge_upserts_survive_sigkill(tmp_path):
    script = """
        import numpy as np
        store.create_collection("docs", 8, {"model": "m"})
        docs = [Document(doc_id=f"d{i}", text=f"text {i}") for i in range(50)]
        store.upsert("docs", docs, np.random.default_rng(0).normal(size=(50, 8)))
        print("ready", flush=True)
        time.sleep(60)
    """
    child = _child(script, tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reopened = EdgeStore(tmp_path)
    assert reopened.count("docs") == 50
    assert reopened.collection_info("docs")["info"] == {"model": "m"}
    assert reopened.query("docs", np.ones(DIM), limit=1)[0].payload["text"].startswith("text ")
    assert reopened.optimize("docs") in (True, False)
    reopened.close()


# ---------------------------------------------------------------------------------------------------------
# Server only: an unreachable server is a 503, not a crash


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_server_unreachable(grpc):
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    options = {"prefer_grpc": True, "grpc_port": port} if grpc else {}
    store = ServerStore(url, timeout=2, check_compatibility=False, **options)
    for call in (
        lambda: store.count("docs"),
        lambda: store.create_collection("docs", DIM, {}),
        lambda: store.list_collections(),
        lambda: store.query("docs", np.ones(DIM), limit=3),
    ):
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
            call()
    store.close()


def _passages(doc_id: str, words: list[str], title: str = "") -> list:
    """A document split into one passage per word (a fact only in one of them)."""
    from store.documents import Passage

    text = " ".join(words)
    out, start = [], 0
    for i, w in enumerate(words):
        out.append(Passage(Document(doc_id, w, title, {"n": len(words)}), i, start, start + len(w)))
        start += len(w) + 1
    assert text[out[-1].start:out[-1].end] == words[-1]
    return out


def test_replacing_and_deleting_documents_keeps_one_version_of_each(filled):
    """A re-upsert replaces every passage of a document (never adds a second copy) and a delete removes
    them all; counts are of documents, passages are counted apart."""
    long_doc = _passages("d3", ["alpha", "bravo", "zeppelin"])
    filled.upsert("docs", long_doc, make_vectors(3, seed=4))
    assert (filled.count("docs"), filled.count_passages("docs")) == (12, 14)
    hits = filled.query_bm25("docs", "zeppelin", 5)
    assert [(h.doc_id, h.passage, h.span) for h in hits] == [("d3", 2, (12, 20))]
    filled.upsert("docs", [Document("d3", "a short text about a marimba")], make_vectors(1, seed=5))
    assert (filled.count("docs"), filled.count_passages("docs")) == (12, 12)
    assert filled.query_bm25("docs", "zeppelin", 5) == []
    assert [h.doc_id for h in filled.query_bm25("docs", "marimba", 5)] == ["d3"]
    with pytest.raises(ValueError, match="not 0..1"):
        filled.upsert("docs", long_doc[1:], make_vectors(2))
    assert filled.delete_documents("docs", ["d3", "d5", "missing"]) == 2
    assert (filled.count("docs"), filled.count_passages("docs")) == (10, 10)
    assert filled.existing_doc_ids("docs", ["d3", "d5", "d6"]) == {"d6"}
    assert filled.query_bm25("docs", "marimba", 5) == []
    assert filled.collection_info("docs")["updated"] >= filled.collection_info("docs")["created"]


class _Cut(Exception):
    pass


def _cut_after(store, writes: int):
    """Make the store's write calls fail after `writes` of them went through (a process killed there)."""
    count = [0]

    def gate():
        count[0] += 1
        if count[0] > writes:
            raise _Cut

    if isinstance(store, EdgeStore):
        shard, meta = store._shard("docs")

        class Shard:
            def __getattr__(self, name):
                return getattr(shard, name)

            def update(self, op):
                gate()
                return shard.update(op)

        store._open["docs"] = (Shard(), meta)
        return lambda: store._open.__setitem__("docs", (shard, meta))
    client = store._client
    upsert, delete = client.upsert, client.delete
    client.upsert = lambda *a, **k: (gate(), upsert(*a, **k))[1]
    client.delete = lambda *a, **k: (gate(), delete(*a, **k))[1]
    return lambda: (setattr(client, "upsert", upsert), setattr(client, "delete", delete))


@pytest.mark.parametrize("writes", [0, 1, 2])
def test_a_write_cut_short_leaves_each_document_wholly_old_or_wholly_new(filled, writes):
    """Cut after the later passages (1), after the commit (2), or before anything (0): a search sees the
    old three-passage document or the new two-passage one, never a mix, and its document count holds."""
    filled.upsert("docs", _passages("d3", ["alpha", "bravo", "zeppelin"]), make_vectors(3, seed=4))
    restore = _cut_after(filled, writes)
    with pytest.raises(_Cut):
        filled.upsert("docs", _passages("d3", ["walrus", "kumquat"]), make_vectors(2, seed=6))
    restore()
    new = writes >= 2
    found = {w: [h.passage for h in filled.query_bm25("docs", w, 20) if h.doc_id == "d3"]
             for w in ("alpha", "bravo", "zeppelin", "walrus", "kumquat")}
    assert found == ({"alpha": [], "bravo": [], "zeppelin": [], "walrus": [0], "kumquat": [1]} if new else
                     {"alpha": [0], "bravo": [1], "zeppelin": [2], "walrus": [], "kumquat": []})
    dense = [h for h in filled.query("docs", make_vectors(3, seed=4)[2], 20) if h.doc_id == "d3"]
    assert all(h.passage < (2 if new else 3) for h in dense) and filled.count("docs") == 12
    filled.upsert("docs", _passages("d3", ["walrus", "kumquat"]), make_vectors(2, seed=6))  # the retry
    assert filled.count_passages("docs") == 13  # and the debris of the cut write is gone
