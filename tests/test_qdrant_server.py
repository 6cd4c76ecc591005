"""Qdrant server settings and alias-based reindexing, through qdrant-client's ":memory:" mode.

Local mode speaks the server's API: it stores HNSW, quantization, on-disk and payload-index settings
but searches by brute force, so what is asserted here is what is observable: the collection config
as the client reads it back, the search params accepted on every query, and aliases that resolve
and move atomically.
"""

import pytest
from test_store import DIM, make_docs, make_vectors

from indexer.jobs import IndexJob, run_index
from indexer.reindex import next_version, reindex, versions
from service.settings import Settings
from store import StoreError, StoreMismatch
from store.config import ServerConfig, parse_payload_indexes
from store.server import ServerStore

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

INT8 = ServerConfig(hnsw_m=32, hnsw_ef_construct=256, hnsw_ef=128, quantization="int8", oversampling=2.0,
                    rescore=True, on_disk=True, shard_number=6, replication_factor=2, write_consistency_factor=1,
                    payload_indexes=(("section", "keyword"), ("size", "integer")))


def fill(store: ServerStore, name: str, n: int = 12, seed: int = 0) -> None:
    store.create_collection(name, DIM, {"model": "m1", "preset": "repllama"})
    store.upsert(name, make_docs(n), make_vectors(n, seed))


def test_settings_map_onto_collection_config():
    s = Settings(qdrant_hnsw_m=32, qdrant_hnsw_ef_construct=256, qdrant_hnsw_ef=128, qdrant_quantization="int8",
                 qdrant_oversampling=2.0, qdrant_rescore=True, qdrant_on_disk=True, qdrant_shard_number=6,
                 qdrant_replication_factor=2, qdrant_write_consistency_factor=1,
                 qdrant_payload_indexes="section, size:integer")
    assert s.server_config() == INT8
    with pytest.raises(ValueError, match="FIELD:TYPE"):
        parse_payload_indexes(["size:decimal"])


def test_int8_cluster_config_is_stored_and_queries_carry_search_params():
    store = ServerStore(location=":memory:", config=INT8)
    sent = []  # local mode drops the cluster fields, so record what the real client was asked for
    create = store._client.create_collection
    store._client.create_collection = lambda *a, **kw: sent.append(kw) or create(*a, **kw)
    indexed = []
    index = store._client.create_payload_index
    store._client.create_payload_index = lambda c, f, t, **kw: indexed.append((f, t)) or index(c, f, t, **kw)
    fill(store, "docs")
    assert indexed == [("doc_id", "keyword"), ("passage", "integer"), ("version", "integer"),
                       ("metadata.section", "keyword"), ("metadata.size", "integer")]
    assert {k: sent[0][k] for k in ("shard_number", "replication_factor", "write_consistency_factor")} == {
        "shard_number": 6, "replication_factor": 2, "write_consistency_factor": 1}
    dense = store._client.get_collection("docs").config.params.vectors["dense"]
    assert (dense.hnsw_config.m, dense.hnsw_config.ef_construct, dense.on_disk) == (32, 256, True)
    q = dense.quantization_config.scalar
    assert q.type == "int8" and q.always_ram is True and q.quantile == 0.99
    params = store._search
    assert params.hnsw_ef == 128 and params.quantization.rescore and params.quantization.oversampling == 2.0
    hits = store.query("docs", make_vectors()[3], 3, {"section": "python"})
    assert hits[0].doc_id == "d3" and all(h.payload["metadata"]["section"] == "python" for h in hits)
    assert [h.doc_id for h in store.query("docs", make_vectors()[7], 2, hybrid_text="xylophone")][0] == "d7"


def test_binary_quantization_and_defaults():
    store = ServerStore(location=":memory:", config=ServerConfig(quantization="binary", oversampling=3.0))
    fill(store, "docs")
    dense = store._client.get_collection("docs").config.params.vectors["dense"]
    assert dense.quantization_config.binary.always_ram is True
    assert store._search.quantization.oversampling == 3.0 and store._search.hnsw_ef is None
    plain = ServerStore(location=":memory:")
    fill(plain, "docs")
    dense = plain._client.get_collection("docs").config.params.vectors["dense"]
    assert dense.quantization_config is None and dense.hnsw_config is None and not dense.on_disk
    assert plain._search is None


def test_reindex_builds_versions_and_moves_the_alias():
    store = ServerStore(location=":memory:")
    first = reindex(store, "docs", lambda name: fill(store, name, 6))
    assert (first.collection, first.previous, first.deleted) == ("docs-v1", None, [])
    assert store.count("docs") == 6 and store.collection_info("docs")["dim"] == DIM  # read through the alias

    second = reindex(store, "docs", lambda name: fill(store, name, 12, seed=1))
    assert (second.collection, second.previous) == ("docs-v2", "docs-v1")
    assert store.count("docs") == 12
    assert store.query("docs", make_vectors(12, seed=1)[9], 1)[0].doc_id == "d9"

    third = reindex(store, "docs", lambda name: fill(store, name, 4, seed=2), keep=1)
    assert third.deleted == ["docs-v1"] and versions(store, "docs") == ["docs-v2", "docs-v3"]
    assert store.count("docs") == 4
    store.point_alias("docs", "docs-v2")  # rollback is one alias move
    assert store.count("docs") == 12


def test_interrupted_build_is_resumed_and_an_empty_one_never_goes_live():
    store = ServerStore(location=":memory:")
    reindex(store, "docs", lambda name: fill(store, name, 6))
    fill(store, "docs-v2", 3)  # a build killed midway: newest version, no alias on it
    assert next_version(store, "docs") == "docs-v2"
    with pytest.raises(StoreError, match="empty"):
        reindex(store, "other", lambda name: store.create_collection(name, DIM, {}))
    assert store.alias_target("other") is None
    done = reindex(store, "docs", lambda name: fill(store, name, 12))
    assert done.collection == "docs-v2" and store.count("docs") == 12


def test_a_plain_collection_cannot_become_an_alias():
    store = ServerStore(location=":memory:")
    fill(store, "docs")
    with pytest.raises(StoreMismatch, match="--in-place"):
        reindex(store, "docs", lambda name: fill(store, name))


class _KeptOpen(ServerStore):
    """A real local-mode store that outlives `run_index`'s close(), so the test can look inside."""

    def close(self) -> None:
        pass


def test_reprank_index_on_a_server_swaps_the_alias(tiny_llama, tmp_path, monkeypatch):
    store = _KeptOpen(location=":memory:")
    monkeypatch.setattr("indexer.jobs.open_store", lambda config: store if config.url else None)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"_id": "d{i}", "text": "passage {i} about packages"}}\n' for i in range(5)))
    s = Settings(qdrant_url="http://qdrant.invalid:6333", model=str(tiny_llama), model_preset="smollm2")
    job = IndexJob(str(corpus), "docs", progress=False)
    assert run_index(job, s).startswith("docs-v1 (alias docs moved from nothing): 5 documents encoded")
    line = run_index(job, s)
    assert line.startswith("docs-v2 (alias docs moved from docs-v1): 5 documents encoded") and "5 in the" in line
    assert store.alias_target("docs") == "docs-v2" and versions(store, "docs") == ["docs-v1", "docs-v2"]
    in_place = run_index(IndexJob(str(corpus), "docs", progress=False, in_place=True), s)
    assert in_place.startswith("docs: 0 documents encoded") and "5 already present" in in_place  # via the alias
