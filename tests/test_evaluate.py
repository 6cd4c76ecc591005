"""`reprank eval` on a tiny BEIR set with a tiny random model: the seven pipelines through the real
store and reranker, metrics from ir-measures, TREC runs beside the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import InProcess, post, tiny_model_args, tiny_settings
from tiny import write_beir

from cli import main
from indexer.corpus import read_qrels, read_queries
from search.evaluate import MEASURES, PIPELINES, score_run
from search.fusion import final_scores
from store.edge import EdgeStore

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir"), n_docs=16, train=8, dev=8)


def test_eval_reports_every_pipeline_and_bm25_is_perfect(dataset, tiny_llama, tmp_path, capsys):
    out = tmp_path / "results" / "eval.json"
    args = ["eval", "--dataset", str(dataset), "--data-dir", str(tmp_path / "data"), "--output", str(out),
            "--rerank-depth", "5", "--no-progress", *tiny_model_args(tiny_llama)]
    assert main(args) == 0
    metrics = json.loads(out.read_text())
    assert list(metrics) == list(PIPELINES)
    for values in metrics.values():
        assert set(values) == set(MEASURES) and all(0.0 <= v <= 1.0 for v in values.values())
    # each dev query is the one rare word of its document: a wired-up metric gives BM25 exactly 1
    assert metrics["bm25"] == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0}
    assert metrics["dense+rerank"]["recall@100"] == metrics["dense"]["recall@100"] == 1.0  # 16 docs < 100
    printed = capsys.readouterr().out
    assert "hybrid+rerank" in printed and "8 queries" in printed

    for name in PIPELINES:
        lines = (out.parent / f"eval.{name}.trec").read_text().splitlines()
        assert len(lines) == 8 * (1 if name == "bm25" else 16)  # BM25 finds only the doc with the word
        qid, q0, doc, rank, score, tag = lines[0].split()
        assert q0 == "Q0" and rank == "1" and tag == f"reprank-{name}" and qid.startswith("dev")

    # a budget no search comes near reranks as deep as no budget, each search doing its own work
    assert main(args + ["--pipelines", "hybrid+rerank+rrf", "--budget-ms", "60000"]) == 0
    budgeted = json.loads(out.read_text())
    assert list(budgeted) == ["hybrid+rerank+rrf", "hybrid+rerank+rrf@60000ms"]
    assert budgeted["hybrid+rerank+rrf@60000ms"] == budgeted["hybrid+rerank+rrf"]
    assert "hybrid+rerank+rrf@60000ms: p50" in capsys.readouterr().out

    # the second run reuses the complete collection, and --reranker none drops the rerank pipelines
    args[args.index("--reranker") + 1] = "none"
    assert main(args + ["--max-queries", "3"]) == 0
    assert list(json.loads(out.read_text())) == ["bm25", "dense", "hybrid"]
    store = EdgeStore(tmp_path / "data")
    assert len(store.list_collections()) == 1 and store.count(store.list_collections()[0]) == 16
    store.close()


SERVED = {  # the /v1/search options of each eval pipeline
    "dense": {"hybrid": False, "rerank": False},
    "hybrid": {"hybrid": True, "rerank": False},
    "dense+rerank": {"hybrid": False, "rerank": True, "rerank_fusion": "none"},
    "hybrid+rerank+rrf": {},  # the default search
}


def read_trec(path: Path) -> dict[str, list[str]]:
    run: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, *_ = line.split()
        run.setdefault(qid, []).append(doc)
    return run


def test_eval_ranks_exactly_as_search_serves(dataset, tiny_llama, tmp_path):
    """`reprank eval` and /v1/search, on the same collection and models, give the same ranking for
    every query and pipeline: both go through search.core.Searcher. Each rerank pipeline runs in its
    own eval, so each reranks its head in one call as /v1/search does (an eval of several rerank
    pipelines scores a shared passage once, in another batch, which may move a near tie)."""
    data, out = tmp_path / "data", tmp_path / "eval.json"
    for pipelines in (["dense", "hybrid", "dense+rerank"], ["hybrid+rerank+rrf"]):
        assert main(["eval", "--dataset", str(dataset), "--data-dir", str(data), "--output", str(out),
                     "--candidates", "10", "--rerank-depth", "10", "--no-progress", "--pipelines", *pipelines,
                     *tiny_model_args(tiny_llama)]) == 0
    runs = {p: read_trec(out.with_name(f"eval.{p}.trec")) for p in SERVED}
    with EdgeStore(data) as store:
        (collection,) = store.list_collections()
    queries = read_queries(dataset)
    served = InProcess(tiny_settings(tiny_llama, data_dir=data, collection=collection))
    try:
        for qid in read_qrels(dataset, "dev"):
            for pipeline, options in SERVED.items():
                r = post(served, "/v1/search", {"query": queries[qid], "top_k": 10, "candidates": 10, **options})
                assert r.status_code == 200, r.text
                assert [h["id"] for h in r.json()["results"]] == runs[pipeline][qid], (pipeline, qid)
    finally:
        served.stop()
    assert runs["hybrid"] != runs["dense"] and runs["hybrid+rerank+rrf"] != runs["hybrid"]  # four rankings


def test_a_query_with_no_result_counts_as_zero():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}}
    assert score_run({"a": ["d1", "d3"], "b": []}, qrels) == {"ndcg@10": 0.5, "mrr@10": 0.5, "recall@100": 0.5}
    assert score_run({"a": ["d3", "d1"]}, qrels)["mrr@10"] == 0.25


def test_unknown_pipeline_is_refused(dataset, tiny_llama, tmp_path, capsys):
    assert main(["eval", "--dataset", str(dataset), "--data-dir", str(tmp_path), "--pipelines", "splade",
                 "--reranker", "none", "--model", str(tiny_llama), "--model-preset", "smollm2"]) == 2
    assert "unknown pipelines ['splade']" in capsys.readouterr().err


def test_a_model_changed_on_disk_gets_a_fresh_collection(tmp_path, monkeypatch):
    """Retraining an adapter in place, or a release shipping a new bundled adapter under the same name,
    must not reuse vectors from the old weights (a bundled adapter once did: same name, stale index);
    nor may a preset whose max length (the passage window) changed reuse passages split by the old one."""
    import models.loading
    from indexer.run import derived_collection

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"v1")

    def name(source: str, max_length: int = 533) -> str:
        encoder = SimpleNamespace(model=SimpleNamespace(source=source),
                                  preset=SimpleNamespace(name="p", max_length=max_length))
        return derived_collection("eval", tmp_path, encoder)

    first = name(str(folder))
    assert name(str(folder)) == first
    assert name(str(folder), max_length=277) != first
    (folder / "adapter_model.safetensors").write_bytes(b"v2, retrained")
    assert name(str(folder)) != first

    shipped = models.loading.source_path("bundled:smollm2-retriever")
    assert (shipped / "adapter_config.json").exists() and shipped.parent.name == "adapters"
    monkeypatch.setattr(models.loading, "source_path", lambda source: folder)  # the package folder, elsewhere
    before = name("bundled:smollm2-retriever")
    (folder / "adapter_model.safetensors").write_bytes(b"v3, the next release")
    assert name("bundled:smollm2-retriever") != before


def test_rrf_fusion_lets_the_first_stage_overrule_a_lone_reranker_vote():
    # reranker: candidate 4 (retrieved 5th) first, candidate 0 (retrieved 1st) second
    scores = [0.8, 0.1, 0.2, 0.3, 0.9]
    assert final_scores(scores, "none") == scores
    fused = final_scores(scores, "rrf")
    assert fused[0] == pytest.approx(1 / 61 + 1 / 62) and fused[4] == pytest.approx(1 / 65 + 1 / 61)
    assert max(range(5), key=lambda i: fused[i]) == 0  # first in one list, second in the other wins
    with pytest.raises(ValueError, match="borda"):
        final_scores(scores, "borda")


def test_compare_runs_counts_queries_and_tests_the_paired_difference(tmp_path):
    """benchmarks/compare_runs.py, as RESULTS.md runs it: 40 queries with one relevant document each;
    AFTER moves it from rank 2 to rank 1 in 30 of them (p tiny); against itself nothing changes (p = 1);
    --min-doc-words keeps the 10 queries whose relevant document is long (8 of them improved)."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                                + "".join(f"q{i}\tgood{i}\t1\n" for i in range(40)))
    with open(tmp_path / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": f"good{i}", "title": "", "text": "word " * (300 if i % 4 == 0 else 20)}) + "\n"
                     for i in range(40))
    before, after = tmp_path / "before.trec", tmp_path / "after.trec"
    before.write_text("".join(f"q{i} Q0 bad{i} 1 2.0 x\nq{i} Q0 good{i} 2 1.0 x\n" for i in range(40)))
    after.write_text("".join(f"q{i} Q0 good{i} 1 2.0 x\nq{i} Q0 bad{i} 2 1.0 x\n" if i < 30 else
                             f"q{i} Q0 bad{i} 1 2.0 x\nq{i} Q0 good{i} 2 1.0 x\n" for i in range(40)))
    script = Path(__file__).parents[1] / "benchmarks" / "compare_runs.py"

    def compare(a: Path, b: Path, *extra: str) -> str:
        out = subprocess.run([sys.executable, str(script), str(tmp_path), "dev", str(a), str(b), "--measure", "RR@10",
                              *extra], capture_output=True, text=True, check=True).stdout
        return out.strip()

    improved = compare(before, after)
    assert improved.startswith("40 queries, RR@10: 0.5000 -> 0.8750 (+0.3750); 30 better, 0 worse")
    assert float(improved.rsplit("p = ", 1)[1]) < 1e-4
    assert compare(before, before).endswith("0 better, 0 worse; paired randomization test p = 1")
    long = compare(before, after, "--min-doc-words", "300")  # q0, q4, ..., q36: 8 of them improved (i < 30)
    assert long.startswith("10 queries, RR@10: 0.5000 -> 0.9000 (+0.4000); 8 better, 0 worse")


def test_by_doc_length_groups_queries_by_their_longest_relevant_document(tmp_path):
    """benchmarks/by_doc_length.py: two short-document queries found first, two long-document ones
    found second; a query no run answered (a --max-queries cut) is left out, not counted as 0."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                                + "".join(f"q{i}\td{i}\t1\n" for i in range(5)))
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": "word " * (50 if i < 2 else 350)}) + "\n")
        f.write(json.dumps({"_id": "x", "title": "", "text": "other"}) + "\n")
    run = tmp_path / "run.trec"
    run.write_text("".join(f"q{i} Q0 d{i} 1 2.0 t\nq{i} Q0 x 2 1.0 t\n" if i < 2 else
                           f"q{i} Q0 x 1 2.0 t\nq{i} Q0 d{i} 2 1.0 t\n" for i in range(4)))
    script = Path(__file__).parents[1] / "benchmarks" / "by_doc_length.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path), "dev", str(run)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split() for line in out[1:]]
    assert rows == [["<", "100", "2", "1.0000"], [">=", "300", "2", "0.6309"],  # rank 2: 1 / log2(3)
                    ["all", "4", "0.8155"]]
