"""Corpus reading (BEIR JSONL[.gz], plain JSONL, Parquet), in-process indexing with a tiny random Llama,
and `reprank index` as a real subprocess: resume after SIGKILL, and a second process on a held store."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import reprank_cmd

from indexer.corpus import CorpusError, count_documents, read_corpus
from indexer.run import index_corpus
from models.loading import model_revision
from store import Document, passage_text
from store.edge import EdgeStore

BEIR_RECORDS = [
    {"_id": "d1", "title": "First", "text": "the first passage"},
    {"_id": "d2", "title": "", "text": "a passage without title"},
    {"_id": 3, "text": "numeric id and no title field"},
]


def write_jsonl(path: Path, records: list, *, blank_after: int | None = None) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "   ")
    data = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def as_tuples(docs) -> list[tuple]:
    return [(d.doc_id, d.title, d.text, d.metadata) for d in docs]


BEIR_EXPECTED = [
    ("d1", "First", "the first passage", {}),
    ("d2", "", "a passage without title", {}),
    ("3", "", "numeric id and no title field", {}),
]


# ---------------------------------------------------------------------------------------------------------
# Corpus reader


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_beir_corpus_file_and_folder(tmp_path, name):
    path = write_jsonl(tmp_path / name, BEIR_RECORDS, blank_after=1)
    assert as_tuples(read_corpus(path)) == BEIR_EXPECTED
    assert as_tuples(read_corpus(str(path))) == BEIR_EXPECTED
    assert count_documents(path) == 3
    # a BEIR dataset folder (corpus.jsonl or corpus.jsonl.gz inside, next to queries.jsonl / qrels)
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "a query"}])
    assert as_tuples(read_corpus(tmp_path)) == BEIR_EXPECTED
    assert count_documents(tmp_path) == 3


def test_plain_jsonl_with_metadata(tmp_path):
    records = [
        {"id": "a", "text": "alpha text", "title": "Alpha", "metadata": {"section": "x", "size": 3}},
        {"id": 7, "text": "seven", "metadata": None},
        {"id": "c", "text": "  padded  ", "title": None, "extra": "ignored"},
    ]
    path = write_jsonl(tmp_path / "docs.jsonl", records)
    docs = list(read_corpus(path))
    assert as_tuples(docs) == [
        ("a", "Alpha", "alpha text", {"section": "x", "size": 3}),
        ("7", "", "seven", {}),
        ("c", "", "  padded  ", {}),
    ]
    assert all(isinstance(d, Document) for d in docs)
    assert count_documents(path) == 3
    assert passage_text(docs[0]) == "Alpha alpha text" and passage_text(docs[2]) == "padded"


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 2500  # more than one 1024-row read batch
    table = pa.table({
        "id": list(range(n)),
        "title": [f"T{i}" if i % 2 else None for i in range(n)],
        "text": [f"parquet passage {i}" for i in range(n)],
        "metadata": [{"section": ["a", "b"][i % 2], "n": i} for i in range(n)],
    })
    path = tmp_path / "corpus.parquet"
    pq.write_table(table, path)
    docs = list(read_corpus(path))
    assert len(docs) == n == count_documents(path)
    assert as_tuples(docs[:2]) == [("0", "", "parquet passage 0", {"section": "a", "n": 0}),
                                   ("1", "T1", "parquet passage 1", {"section": "b", "n": 1})]
    assert docs[-1].doc_id == str(n - 1)

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["fine", ""]}), bad)
    with pytest.raises(CorpusError, match=r"bad\.parquet: row 2: `text`"):
        list(read_corpus(bad))


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ({"title": "no id", "text": "body"}, "no `_id` or `id`"),
        ({"_id": "", "text": "body"}, "no `_id` or `id`"),
        ({"_id": "x", "text": ""}, "`text` must be a non-empty string"),
        ({"_id": "x", "text": "   "}, "`text` must be a non-empty string"),
        ({"_id": "x"}, "`text` must be a non-empty string"),
        ({"_id": "x", "text": 5}, "`text` must be a non-empty string"),
        ('{"_id": "x", "text": ', "invalid JSON"),
        ('["_id", "text"]', "a record must be a JSON object"),
        ({"_id": "x", "text": "t", "metadata": ["a", "list"]}, "`metadata` must be an object"),
        ({"_id": "x", "text": "t", "metadata": "str"}, "`metadata` must be an object"),
    ],
    ids=["missing-id", "empty-id", "empty-text", "blank-text", "no-text", "text-not-str", "invalid-json",
         "not-object", "metadata-list", "metadata-str"],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_bad_record_names_its_line(tmp_path, bad_line, message, suffix):
    # good, blank line, good, bad: the bad record is on physical line 4 (blank lines count)
    path = write_jsonl(tmp_path / f"corpus{suffix}", [BEIR_RECORDS[0], BEIR_RECORDS[1], bad_line],
                       blank_after=1)
    it = read_corpus(path)
    assert next(it).doc_id == "d1" and next(it).doc_id == "d2"  # streamed: good records come first
    with pytest.raises(CorpusError) as err:
        next(it)
    assert f"{path}:4: " in str(err.value) and message in str(err.value)


def test_missing_corpus(tmp_path, capsys):
    for path in (tmp_path / "nope.jsonl", tmp_path):  # no file; a folder without corpus.jsonl[.gz]
        with pytest.raises(CorpusError, match="no such corpus file"):
            list(read_corpus(path))
        with pytest.raises(CorpusError, match="no such corpus file"):
            count_documents(path)
    # `reprank index` fails cleanly before loading a model or touching the store
    from cli import main

    data = tmp_path / "data"
    assert main(["index", "--corpus", str(tmp_path / "nope.jsonl"), "--collection", "c",
                 "--data-dir", str(data), "--model", str(tmp_path / "no-model")]) == 2
    assert f"reprank: error: {tmp_path / 'nope.jsonl'}: no such corpus file" in capsys.readouterr().err
    assert not data.exists()


# ---------------------------------------------------------------------------------------------------------
# index_corpus in-process


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    from models import open_encoder

    enc = open_encoder(str(tiny_llama), "smollm2")
    yield enc
    enc.close()


def make_docs(n: int, prefix: str = "doc") -> list[Document]:
    return [Document(f"{prefix}-{i}", f"short document number {i} about topic {i % 13}", title=f"t{i}",
                     metadata={"n": i}) for i in range(n)]


def test_index_then_rerun_skips_everything(encoder, tmp_path):
    docs = make_docs(70)
    store = EdgeStore(tmp_path)
    try:
        stats = index_corpus(docs, encoder, store, "c", chunk_size=16, total=len(docs), progress=False)
        assert (stats.seen, stats.indexed, stats.skipped) == (70, 70, 0)
        assert store.count("c") == 70
        info = store.collection_info("c")
        source = str(encoder.model.source)
        assert info["dim"] == encoder.dim == 64
        assert info["info"] == {"model": source, "preset": "smollm2", "revision": model_revision(source)}
        query = encoder.encode([passage_text(docs[5])], "passage").vectors[0]
        assert store.query("c", query, limit=1)[0].doc_id == "doc-5"  # the stored vector is that passage's

        again = index_corpus(docs, encoder, store, "c", chunk_size=16, progress=False)
        assert (again.seen, again.indexed, again.skipped) == (70, 0, 70)
        assert store.count("c") == 70
    finally:
        store.close()
    reopened = EdgeStore(tmp_path)  # and it is all on disk
    assert reopened.count("c") == 70
    assert reopened.existing_doc_ids("c", [d.doc_id for d in docs] + ["doc-999"]) == {d.doc_id for d in docs}
    reopened.close()


def test_duplicate_doc_ids_end_as_one_point(encoder, tmp_path):
    docs = make_docs(30)
    # chunks of 10: doc-1 twice in the first chunk; doc-2 and doc-0 again in the last one (with doc-29)
    corpus = docs[:5] + [Document("doc-1", "a second doc-1 in the same chunk")] + docs[5:] + \
        [Document("doc-2", "doc-2 again, in a later chunk"), docs[0]]
    store = EdgeStore(tmp_path)
    try:
        stats = index_corpus(corpus, encoder, store, "c", chunk_size=10, progress=False)
        assert stats.seen == len(corpus) == 33
        assert stats.indexed == 30 and stats.skipped == 2
        assert store.count("c") == 30
        assert store.existing_doc_ids("c", [d.doc_id for d in docs]) == {d.doc_id for d in docs}
        hits = store.query("c", np.ones(64, dtype=np.float32), limit=100)
        assert sorted(h.doc_id for h in hits) == sorted(d.doc_id for d in docs)
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------------------
# `reprank index` subprocesses

N_RESUME = 1500
SUMMARY = re.compile(r"^(\S+): (\d+) documents encoded \(.*\), (\d+) already present, (\d+) in the collection",
                     re.M)


def index_args(corpus: Path, data: Path, model: Path, *extra: str) -> list[str]:
    return reprank_cmd("index", "--corpus", str(corpus), "--collection", "c", "--data-dir", str(data),
                       "--chunk-size", "25", "--model", str(model), "--model-preset", "smollm2", *extra)


class StderrReader:
    """Collects a child's stderr on a thread, so tqdm's carriage-return updates can be read as they come."""

    def __init__(self, proc: subprocess.Popen):
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True)
        self.thread.start()

    def _pump(self, stream) -> None:
        while chunk := stream.read1(65536):
            with self.lock:
                self.buf += chunk

    def text(self) -> str:
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def done_docs(self) -> int:
        counts = [int(n) for n in re.findall(rf"(\d+)/{N_RESUME}\b", self.text())]
        return max(counts, default=0)


@pytest.fixture(scope="module")
def locked_attempt(tiny_llama, encoder, tmp_path_factory):
    """`reprank index` on a collection this process holds open (indexed, then queried), started in the
    background: the resume test requests it too, so that the child's slow start overlaps that test."""
    tmp = tmp_path_factory.mktemp("locked")
    corpus = write_jsonl(tmp / "corpus.jsonl", [{"_id": f"d{i}", "text": f"text {i}"} for i in range(5)])
    data = tmp / "data"
    store = EdgeStore(data)
    index_corpus(read_corpus(corpus), encoder, store, "c", progress=False)
    assert len(store.query("c", np.ones(64, dtype=np.float32), limit=3)) == 3  # the shard is open here
    proc = subprocess.Popen([*index_args(corpus, data, tiny_llama), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc, data, store
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    store.close()


def test_index_resumes_after_sigkill(tiny_llama, tmp_path, locked_attempt):
    corpus = tmp_path / "corpus.jsonl"
    ids = [f"doc-{i}" for i in range(N_RESUME)]
    write_jsonl(corpus, [{"_id": d, "title": f"title {i}", "text": f"short unique document {i} on {i % 37}"}
                         for i, d in enumerate(ids)])
    data = tmp_path / "data"
    cmd = index_args(corpus, data, tiny_llama)

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = StderrReader(proc)
    try:
        deadline = time.monotonic() + 120
        while (done := reader.done_docs()) < 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no progress to kill at (rc={proc.returncode}): {reader.text()[-3000:]}")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.thread.join(5)
    assert proc.returncode == -signal.SIGKILL, reader.text()[-3000:]
    assert done < N_RESUME, "indexing finished before the kill"
    assert not SUMMARY.search(proc.stdout.read().decode())

    second = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    m = SUMMARY.search(second.stdout)
    assert m, second.stdout
    encoded, present, total = int(m[2]), int(m[3]), int(m[4])
    assert m[1] == "c" and total == N_RESUME
    assert present >= done and encoded > 0 and encoded + present == N_RESUME  # nothing encoded twice

    store = EdgeStore(data)
    try:
        assert store.count("c") == N_RESUME  # one point per document
        assert store.existing_doc_ids("c", ids) == set(ids)
        assert store.collection_info("c")["info"]["preset"] == "smollm2"
    finally:
        store.close()


def test_second_process_gets_store_locked(locked_attempt):
    proc, data, store = locked_attempt
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        store.close()
    assert proc.returncode == 2, stderr[-3000:]
    shard = data / "collections" / "c" / "shard"
    assert f"reprank: error: the embedded collection folder {shard} is in use by another process" in stderr
    assert "--qdrant-url" in stderr and "Traceback" not in stderr
    assert not SUMMARY.search(stdout)
    again = EdgeStore(data)  # the refused process changed nothing
    assert again.count("c") == 5
    again.close()
