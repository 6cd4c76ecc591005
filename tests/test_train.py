"""Training recipes on a tiny random Llama and a tiny BEIR set: loss goes down, checkpoints resume
exactly, the output adapters load through open_encoder / open_reranker, dev qrels are never read."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tiny import write_beir

from cli import main
from models import open_encoder, open_reranker
from models.loading import source_path
from store import Document
from training import data as train_data
from training.data import batch_indices, select_queries, sentences
from training.llara import Layout, llara_states

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]

TEXTS = ["a yaml parser and emitter for python", "tool to burn CDs and DVDs. It has a GUI."]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir"))


def fixed_groups(dataset: Path, tmp_path: Path) -> list[str]:
    """Flags for 4 train queries, all in every batch, each with one fixed negative that is no other
    query's positive: every step sees the same 8 distinct passages, so the loss curve is learning only."""
    chosen = select_queries(train_data.read_qrels(dataset, "train"), 4, 3)
    others = [f"d{i}" for i in range(8) if f"q{i}" not in chosen]
    path = tmp_path / "negatives.jsonl"
    path.write_text("".join(json.dumps({"query_id": q, "negatives": [d]}) + "\n" for q, d in zip(chosen, others, strict=True)))
    return ["--limit-train-queries", "4", "--batch-size", "4", "--group-size", "2", "--hard-negatives", str(path)]


def train(recipe: str, dataset: Path, out: Path, base: Path | None, *extra: str) -> list[float]:
    args = ["train", recipe, "--dataset", str(dataset), "--output-dir", str(out),
            *(["--base", str(base)] if base else []), "--lora-r", "4", "--lora-dropout", "0", "--lr", "1e-2", "--warmup-steps", "0", "--log-every", "100",
            "--seed", "3", *extra]
    assert main(args) == 0
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def decreases(losses: list[float], k: int = 4) -> bool:
    return np.mean(losses[:k]) > np.mean(losses[-k:])


def lora_b_is_trained(folder: Path) -> bool:
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)  # exported in fp16: a few MB
        return any("lora_B" in k and f.get_tensor(k).abs().sum() > 0 for k in keys)


@pytest.fixture(scope="module")
def llara_adapter(dataset, tiny_llama, tmp_path_factory) -> tuple[Path, list[float]]:
    out = tmp_path_factory.mktemp("llara")
    return out, train("llara", dataset, out, tiny_llama, "--max-steps", "14", "--batch-size", "8")


def test_llara_learns_and_its_states_are_the_served_embeddings(llara_adapter, tiny_llama):
    out, losses = llara_adapter
    assert decreases(losses), losses
    meta = json.loads((out / "reprank.json").read_text())
    assert meta["preset"] == "smollm2-llara" and list(meta["added_tokens"]) == [f"<s{i}>" for i in range(1, 17)]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llama)
    record = json.loads((out / "train_args.json").read_text())
    assert record["seed"] == 3 and record["command"].startswith("reprank train llara --dataset")
    assert record["args"]["max_steps"] == 14 and record["lora"]["r"] == 4
    assert lora_b_is_trained(out)

    enc = open_encoder(str(out))  # preset and added tokens from reprank.json, base from adapter_config.json
    try:
        layout = Layout(enc.tokenizer, enc.preset, enc.preset.max_length)
        with torch.no_grad():
            st = llara_states(enc.model.backbone, layout, TEXTS, enc.pad_id)
        # EBAE reads the passage embedding's states; EBAR, despite sharing the forward, the query's
        for side, states in (("passage", st.summarize), ("query", st.predict)):
            ref = torch.nn.functional.normalize(states.mean(1), dim=-1).numpy()
            np.testing.assert_allclose(enc.encode(TEXTS, side).vectors, ref, atol=1e-4)
    finally:
        enc.close()


def test_retriever_continues_llara_with_mined_negatives_and_never_reads_dev(llara_adapter, dataset, tmp_path,
                                                                             monkeypatch):
    splits = []
    real = train_data.read_qrels
    monkeypatch.setattr(train_data, "read_qrels", lambda ds, split: splits.append(split) or real(ds, split))
    negatives = tmp_path / "negatives.jsonl"
    assert main(["train", "mine", "--dataset", str(dataset), "--output", str(negatives), "--model",
                 str(llara_adapter[0]), "--data-dir", str(tmp_path / "data"), "--depth", "3", "--no-progress"]) == 0
    mined = [json.loads(line) for line in negatives.read_text().splitlines()]
    assert [m["query_id"] for m in mined] == [f"q{i}" for i in range(8)]  # train queries only
    for m in mined:  # three negatives from the train side of the corpus, never the query's positive
        assert len(m["negatives"]) == 3 and set(m["negatives"]) <= {f"d{i}" for i in range(8)}
        assert f"d{m['query_id'][1:]}" not in m["negatives"]

    out = tmp_path / "retriever"
    losses = train("retriever", dataset, out, None, "--init", str(llara_adapter[0]),
                   "--hard-negatives", str(negatives), "--max-steps", "3", "--batch-size", "4", "--group-size", "3",
                   "--gradient-checkpointing")
    assert len(losses) == 3 and splits and set(splits) == {"train"}
    assert json.loads((out / "reprank.json").read_text())["preset"] == "smollm2-llara"  # from --init
    enc = open_encoder(str(out))
    try:
        assert enc.encode(TEXTS, "query").vectors.shape == (2, 64)
    finally:
        enc.close()


def test_retriever_learns_resumes_exactly_and_changes_the_encoder(dataset, tiny_llama, tmp_path):
    out = tmp_path / "retriever"
    args = (*fixed_groups(dataset, tmp_path), "--temperature", "0.05", "--save-every", "6")
    losses = train("retriever", dataset, out, tiny_llama, "--max-steps", "12", *args)
    assert decreases(losses), losses
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llama)
    assert lora_b_is_trained(out)
    trained = open_encoder(str(out))
    base = open_encoder(str(tiny_llama), "smollm2")
    try:
        cos = (trained.encode(TEXTS, "passage").vectors * base.encode(TEXTS, "passage").vectors).sum(1)
        assert (cos < 0.999).all()
    finally:
        trained.close()
        base.close()

    # a run killed after step 6: without --resume it refuses to mix runs, with it continues at step 7
    first = (out / "adapter_model.safetensors").read_bytes()
    (out / "adapter_model.safetensors").unlink()
    import shutil

    shutil.rmtree(out / "checkpoint-12")
    assert main(["train", "retriever", "--dataset", str(dataset), "--output-dir", str(out), "--base",
                 str(tiny_llama), "--max-steps", "12"]) == 2
    resumed = train("retriever", dataset, out, tiny_llama, "--max-steps", "12", "--resume", *args)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))  # steps 7-12 of the killed run replaced, not repeated
    np.testing.assert_allclose(resumed[6:], losses[6:], rtol=1e-4)
    assert (out / "adapter_model.safetensors").read_bytes() == first


def test_reranker_learns_and_loads_with_its_score_head(dataset, tiny_llama, tmp_path, caplog):
    out = tmp_path / "reranker"
    losses = train("reranker", dataset, out, tiny_llama, *fixed_groups(dataset, tmp_path), "--max-steps", "12",
                   "--gradient-checkpointing")
    assert decreases(losses), losses
    assert json.loads((out / "reprank.json").read_text()) == {"preset": "smollm2-rankllama"}
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        head = [k for k in f.keys() if "score" in k]
        assert head, "the SEQ_CLS adapter must carry the trained score head"
        head_weight = f.get_tensor(head[0]).float()
    assert lora_b_is_trained(out)

    caplog.clear()
    trained = open_reranker(str(out))
    assert "MISSING" not in caplog.text, caplog.text  # the adapter brings the head: no report calls it fresh
    from models.loading import load
    from models.reranker import Reranker

    plain = load(str(tiny_llama), "score")  # the same head without the LoRA
    plain.head.weight.data.copy_(head_weight)
    base = Reranker(plain, trained.preset)
    try:
        got = trained.score("yaml parser", TEXTS).scores
        assert not np.allclose(got, base.score("yaml parser", TEXTS).scores, atol=1e-4)
    finally:
        trained.close()
        base.close()


def test_a_reranker_continues_from_its_adapter_with_its_score_head(dataset, tiny_llama, tmp_path):
    """--init continues a trained reranker (how the shipped one meets new kinds of text): the first step's
    loss is the trained model's, not a fresh head's chance level, and the preset comes from the adapter."""
    groups = fixed_groups(dataset, tmp_path)
    first = train("reranker", dataset, tmp_path / "first", tiny_llama, *groups, "--max-steps", "12")
    assert decreases(first), first
    more = train("reranker", dataset, tmp_path / "more", None, *groups, "--max-steps", "2",
                 "--init", str(tmp_path / "first"))
    assert more[0] < np.mean(first[:4]) and abs(more[0] - first[-1]) < abs(more[0] - first[0])
    assert json.loads((tmp_path / "more" / "reprank.json").read_text()) == {"preset": "smollm2-rankllama"}
    open_reranker(str(tmp_path / "more")).close()


def test_query_likelihood_reranker_learns_and_loads_as_served(dataset, tiny_llama, tmp_path):
    """Fine-tuning the zero-shot query-likelihood reranker: the group loss falls, the CAUSAL_LM adapter
    loads through open_reranker with its preset, and it scores differently from the untrained model."""
    out = tmp_path / "ql-reranker"
    losses = train("reranker", dataset, out, tiny_llama, *fixed_groups(dataset, tmp_path), "--max-steps", "12",
                   "--preset", "smollm2-reranker")
    assert decreases(losses), losses
    assert json.loads((out / "reprank.json").read_text()) == {"preset": "smollm2-reranker"}
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    assert lora_b_is_trained(out)

    trained = open_reranker(str(out))
    base = open_reranker(str(tiny_llama), "smollm2-reranker")
    try:
        assert trained.preset.head == "query_likelihood"
        got = trained.score("yaml parser", TEXTS).scores
        assert all(0 < s < 1 for s in got)  # exp of the mean query log-probability
        untrained = base.score("yaml parser", TEXTS).scores
        assert not np.allclose(np.log(got), np.log(untrained), atol=1e-4)  # log: a random model's are tiny
    finally:
        trained.close()
        base.close()


def test_sampling_is_deterministic_and_covers_each_epoch():
    assert sorted(batch_indices(10, 5, 0, 1) + batch_indices(10, 5, 1, 1)) == list(range(10))
    assert batch_indices(10, 4, 7, 1) == batch_indices(10, 4, 7, 1) != batch_indices(10, 4, 7, 2)
    qrels = {f"q{i}": {"d": 1} for i in range(20)} | {"zero": {"d": 0}}
    assert select_queries(qrels, None, 0) == sorted(f"q{i}" for i in range(20))  # no positive, no query
    assert select_queries(qrels, 5, 0) == select_queries(qrels, 5, 0) != select_queries(qrels, 5, 1)


def test_sentences_split_descriptions_and_join_fragments():
    text = "Caja is the file manager for MATE. It browses files.\n\nThis package contains the dev files. Yes."
    assert sentences(text) == ["Caja is the file manager for MATE. It browses files.",
                               "This package contains the dev files. Yes."]
    from training.llara import examples

    ex = examples([Document("d", "First sentence of four words. Second sentence here as well.")])
    assert [(e.text, e.next) for e in ex] == [("First sentence of four words.", "Second sentence here as well."),
                                             ("Second sentence here as well.", None)]


def test_a_reduced_mining_pool_keeps_positives_then_lexical_neighbours(dataset):
    from training.data import load_train
    from training.mine import _pool

    train = load_train(dataset, 2, seed=1)
    positives = [d for q in train.query_ids for d in train.positives[q]]
    pool = _pool(train, 5, seed=1)
    assert len(pool) == len(set(pool)) == 5 and pool[:2] == positives
    assert set(pool) <= set(train.corpus) and pool == _pool(train, 5, seed=1)
    assert _pool(train, None, seed=1) == sorted(train.corpus)


def test_bm25_mining_needs_no_encoder_and_keeps_positives_out(dataset, tmp_path):
    out = tmp_path / "bm25.jsonl"
    assert main(["train", "mine", "--dataset", str(dataset), "--output", str(out), "--method", "bm25",
                 "--depth", "3"]) == 0
    mined = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["query_id"] for m in mined] == [f"q{i}" for i in range(8)]  # train queries only
    for m in mined:
        assert len(m["negatives"]) == 3 and set(m["negatives"]) <= {f"d{i}" for i in range(8)}
        assert f"d{m['query_id'][1:]}" not in m["negatives"]


def test_lora_on_the_top_layers_only_still_learns(dataset, tiny_llama, tmp_path):
    out = tmp_path / "top"
    losses = train("retriever", dataset, out, tiny_llama, "--max-steps", "8", "--lora-layers", "1",
                   *fixed_groups(dataset, tmp_path), "--temperature", "0.05")
    assert decreases(losses), losses
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        layers = {int(k.split(".layers.")[1].split(".")[0]) for k in f.keys() if ".layers." in k}
    top = json.loads((tiny_llama / "config.json").read_text())["num_hidden_layers"] - 1
    assert layers == {top}
    assert main(["train", "retriever", "--dataset", str(dataset), "--output-dir", str(tmp_path / "bad"),
                 "--base", str(tiny_llama), "--lora-layers", "99"]) == 2  # a clear error, not a traceback


def test_bf16_autocast_still_learns_and_exports_the_usual_adapter(dataset, tiny_llama, tmp_path):
    out = tmp_path / "bf16"
    losses = train("retriever", dataset, out, tiny_llama, "--max-steps", "8", "--bf16",
                   *fixed_groups(dataset, tmp_path), "--temperature", "0.05")
    assert decreases(losses), losses
    assert lora_b_is_trained(out)
    assert json.loads((out / "train_args.json").read_text())["args"]["bf16"] is True
    enc = open_encoder(str(out))
    try:
        assert np.isfinite(enc.encode(TEXTS, "passage").vectors).all()
    finally:
        enc.close()


def test_a_checkpoint_exports_as_the_finished_run_would(llara_adapter, dataset, tiny_llama, tmp_path):
    out = tmp_path / "run"
    train("retriever", dataset, out, None, "--init", str(llara_adapter[0]), "--max-steps", "2",
          "--save-every", "2", "--batch-size", "4", "--group-size", "2")
    exported = tmp_path / "exported"
    assert main(["train", "export", str(out / "checkpoint-2"), "--output-dir", str(exported),
                 "--preset", "smollm2-llara", "--base", str(tiny_llama)]) == 0
    for name in ("reprank.json", "adapter_config.json"):
        assert json.loads((exported / name).read_text()) == json.loads((out / name).read_text())
    with safe_open(out / "adapter_model.safetensors", "pt") as a, \
            safe_open(exported / "adapter_model.safetensors", "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    assert len((exported / "train_log.jsonl").read_text().splitlines()) == 2
    record = json.loads((exported / "train_args.json").read_text())
    assert record["step"] == 2 and record["run"] == json.loads((out / "train_args.json").read_text())
    assert main(["train", "export", str(out), "--output-dir", str(tmp_path / "bad"), "--preset", "smollm2-llara"]) == 2


def test_excluded_queries_are_never_mined_or_trained_on(dataset, tmp_path):
    held_out = tmp_path / "heldout.tsv"
    held_out.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq5\td5\t1\n")
    out = tmp_path / "bm25.jsonl"
    assert main(["train", "mine", "--dataset", str(dataset), "--output", str(out), "--method", "bm25",
                 "--depth", "3", "--exclude-queries", str(held_out)]) == 0
    mined = [json.loads(line)["query_id"] for line in out.read_text().splitlines()]
    assert mined == ["q0", "q2", "q3", "q4", "q6", "q7"]
    assert train_data.load_train(dataset, None, 0, held_out).query_ids == mined
    assert set(train_data.load_train(dataset, 6, 0, held_out).query_ids) == set(mined)  # a sample draws from the rest


def test_frozen_added_tokens_keep_the_init_rows_while_the_lora_learns(llara_adapter, dataset, tmp_path):
    out = tmp_path / "frozen"
    train("retriever", dataset, out, None, "--init", str(llara_adapter[0]), "--freeze-added-tokens",
          "--max-steps", "2", "--batch-size", "4", "--group-size", "2")
    with safe_open(llara_adapter[0] / "adapter_model.safetensors", "pt") as a, \
            safe_open(out / "adapter_model.safetensors", "pt") as b:
        rows = [k for k in a.keys() if "trainable_tokens" in k]
        assert rows and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in rows)
        lora = [k for k in a.keys() if "lora_B" in k]
        assert any(not torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in lora)
    assert json.loads((out / "train_args.json").read_text())["args"]["freeze_added_tokens"] is True
    assert main(["train", "retriever", "--dataset", str(dataset), "--output-dir", str(tmp_path / "no-init"),
                 "--freeze-added-tokens"]) == 2  # nothing to keep fixed: a clear error, not a silent no-op


def test_adapt_makes_its_own_pairs_trains_and_keeps_the_best_on_held_out_pairs(llara_adapter, tmp_path):
    """`train adapt --pseudo cloze --llara-steps 2` on an unlabelled corpus: inverse-cloze pairs (the query
    sentence is not in its passage), LLaRA then contrastive from the given adapter, every checkpoint scored
    on held-out pairs, the best (or the start) written as a servable adapter with adapt.json."""
    from models import open_encoder
    from models.loading import model_revision
    from training.adapt import write_pseudo

    topics = ["parsing yaml files", "burning optical discs", "editing raster images", "sending mail",
              "compressing archives", "playing music", "drawing graphs", "tracking time"]
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(40):
            t = topics[i % len(topics)]
            text = (f"This tool helps with {t} number {i}. It reads input files and writes results quickly. "
                    f"Options control {t} in detail for case {i}. The manual explains every switch it has.")
            f.write(json.dumps({"_id": f"doc{i}", "title": "", "text": text}) + "\n")
    out = tmp_path / "adapted"
    args = ["train", "adapt", "--corpus", str(corpus), "--output-dir", str(out), "--init", str(llara_adapter[0]),
            "--pseudo", "cloze", "--llara-steps", "2", "--steps", "4", "--save-every", "2", "--heldout", "6",
            "--eval-docs", "20", "--seed", "3"]
    assert main(args) == 0
    report = json.loads((out / "adapt.json").read_text())
    assert set(report["heldout_ndcg@10"]) == {"start", "checkpoint-2", "checkpoint-4"}
    assert report["heldout"] == 6 and report["train"] == report["pairs"] - 6
    best = max(report["heldout_ndcg@10"].values())
    assert report["heldout_ndcg@10"][report["chosen"]] == best and report["improved"] == (report["chosen"] != "start")
    with open_encoder(str(out), "smollm2-retriever") as enc:
        assert enc.encode(["parsing yaml"], "query").vectors.shape[0] == 1
    assert (model_revision(str(out)) == model_revision(str(llara_adapter[0]))) == (report["chosen"] == "start")
    queries = {json.loads(x)["_id"]: json.loads(x)["text"] for x in (out / "work/pairs/queries.jsonl").open()}
    passages = {json.loads(x)["_id"]: json.loads(x)["text"] for x in (out / "work/pairs/corpus.jsonl").open()}
    qrels = [line.split("\t")[:2] for line in (out / "work/pairs/qrels/train.tsv").read_text().splitlines()[1:]]
    assert qrels and all(queries[q] not in passages[d] for q, d in qrels)  # the query sentence was taken out
    with pytest.raises(ValueError, match="too few"):
        write_pseudo([], tmp_path / "none", heldout=5, eval_docs=10, seed=0)


def test_adapt_by_default_continues_the_init_adapter_on_lead_pairs(llara_adapter, tmp_path):
    """The defaults (`--pseudo lead`, `--llara-steps 0`) skip the pretext stage: the contrastive pass
    starts from --init itself, on first-sentence pairs."""
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(30):
            f.write(json.dumps({"_id": f"d{i}", "title": f"tool {i} manual", "text": (
                f"Section {i} explains the tool. It converts files of kind {i} into reports. "
                f"Every report lists the {i} fields that were found and the errors met on the way.")}) + "\n")
    out = tmp_path / "adapted"
    assert main(["train", "adapt", "--corpus", str(corpus), "--output-dir", str(out), "--init",
                 str(llara_adapter[0]), "--steps", "2", "--save-every", "2", "--heldout", "5", "--eval-docs", "12",
                 "--seed", "1"]) == 0
    report = json.loads((out / "adapt.json").read_text())
    assert not (out / "work/llara").exists() and "LLaRA (EBAE + EBAR)" not in report["seconds"]
    assert (report["pseudo"], report["llara_steps"]) == ("lead", 0)
    assert set(report["heldout_ndcg@10"]) == {"start", "checkpoint-2"}
    assert json.loads((out / "work/retriever/train_args.json").read_text())["args"]["init"] == str(llara_adapter[0])
    queries = [json.loads(x)["text"] for x in (out / "work/pairs/queries.jsonl").open()]
    assert queries and all(q.startswith("Section ") for q in queries)  # each document's first sentence


def test_the_preset_of_a_bundled_init_adapter_is_its_own():
    """`--init bundled:smollm2-retriever` continues the shipped adapter with its preset (LLaRA tokens), as a
    folder path does; it once fell back to the plain smollm2 preset and failed on the missing token rows."""
    from training.common import preset_name

    args = argparse.Namespace(preset=None, init="bundled:smollm2-retriever")
    assert preset_name(args, "smollm2") == json.loads((source_path(args.init) / "reprank.json").read_text())["preset"]
    assert preset_name(args, "smollm2") == "smollm2-llara"


def test_lead_pseudo_queries_are_first_sentences_taken_out_of_their_passage():
    from training.adapt import pseudo_pair

    doc = Document("d1", "Frobnicate widgets in bulk. It reads a list of widgets and frobnicates each one of them "
                   "in place, keeping a backup of every widget it changes.", title="frob tool")
    rng = random.Random(0)
    for _ in range(5):  # no draw involved: always the first sentence
        query, passage = pseudo_pair(doc, rng, "lead")
        assert query == "Frobnicate widgets in bulk." and query not in passage.text and passage.title == "frob tool"
    single = Document("d2", "Frobnicate widgets in bulk, reading a list of them and changing each in place.",
                      title="frob tool")
    assert pseudo_pair(single, rng, "lead") == ("frob tool", Document("d2", single.text))
    assert pseudo_pair(Document("d2", single.text), rng, "lead") is None  # no title to fall back on
