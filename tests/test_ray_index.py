"""`reprank index --engine ray` on a local Ray instance (2 CPUs, small object store) with a tiny random
Llama: the points it writes equal the single-process indexer's, vector for vector."""

import gzip
import json
import os
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import reprank_cmd

from indexer.corpus import read_corpus
from indexer.passages import Window
from indexer.ray_index import EncoderSpec, index_with_ray
from indexer.run import collection_info, index_corpus
from models import encoder_source, open_encoder
from models.loading import model_revision
from store.edge import EdgeStore
from store.server import ServerStore

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning"),
]
RECORDS = [{"_id": f"p{i}", "title": f"pkg{i}" if i % 3 else "", "text": f"package {i} parses files " * (1 + i % 5),
            "metadata": {"section": ["libs", "admin"][i % 2], "size": i}} for i in range(24)]


def test_cli_ray_engine_into_the_embedded_store(tiny_llama, tmp_path):
    """The whole command: its own local Ray instance, one CPU actor (CPUs - 1), the driver writing to Edge."""
    corpus = write_corpus(tmp_path / "corpus.jsonl.gz")
    out = subprocess.run(reprank_cmd("index", "--engine", "ray", "--corpus", str(corpus), "--collection", "docs",
                                     "--data-dir", str(tmp_path / "data"), "--chunk-size", "8", "--no-progress",
                                     "--model", str(tiny_llama), "--model-preset", "smollm2"),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"docs: {len(RECORDS)} documents encoded" in out.stdout and f"{len(RECORDS)} in the collection" in out.stdout
    store = EdgeStore(tmp_path / "data")
    assert store.count("docs") == len(RECORDS) and store.collection_info("docs")["dim"] == 64
    store.close()


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    # 2 CPUs: one encoder actor leaves one CPU to the read/parse tasks (a pool taking every CPU deadlocks)
    ray.init(num_cpus=2, object_store_memory=128 * 1024**2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


def points(store: ServerStore, name: str) -> dict:
    """Stored points by (document, passage), their payloads without the write's version."""
    records, _ = store._client.scroll(name, limit=1000, with_payload=True, with_vectors=True)
    for r in records:
        assert isinstance(r.payload.pop("version"), int)
    return {(r.payload["doc_id"], r.payload["passage"]): r for r in records}


def write_corpus(path):
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), path)
    else:
        with gzip.open(path, "wt") as f:
            f.write("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    return path


@pytest.mark.parametrize("name", ["corpus.jsonl.gz", "corpus.parquet"])
def test_ray_engine_writes_the_same_points(ray_local, tiny_llama, tmp_path, name):
    """Long documents too: a window of 12 tokens splits most of them into passages, in both engines alike."""
    corpus = write_corpus(tmp_path / name)
    spec = EncoderSpec(str(tiny_llama), "smollm2", passage_tokens=12, passage_stride=9)
    source, preset = encoder_source(spec.model, spec.preset)

    single, ray_store = ServerStore(location=":memory:"), ServerStore(location=":memory:")
    enc = open_encoder(spec.model, spec.preset)
    index_corpus(read_corpus(corpus), enc, single, "docs", chunk_size=8, progress=False, window=Window(12, 9))
    info = collection_info(source, preset)
    assert single.collection_info("docs")["info"] == info and info["revision"] == model_revision(source)
    enc.close()

    stats = index_with_ray(corpus, spec, info, ray_store, "docs", chunk_size=8)
    a, b = points(single, "docs"), points(ray_store, "docs")
    assert stats.indexed == len(RECORDS) and stats.passages == len(a) > len(RECORDS)
    times = ("created", "updated")
    assert ({k: v for k, v in ray_store.collection_info("docs").items() if k not in times}
            == {k: v for k, v in single.collection_info("docs").items() if k not in times})
    assert a.keys() == b.keys()
    for pid, p in a.items():
        assert b[pid].payload == p.payload
        assert np.allclose(b[pid].vector["dense"], p.vector["dense"], atol=1e-5)
        assert b[pid].vector["bm25"] == p.vector["bm25"]
