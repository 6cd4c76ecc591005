"""`reprank train adapt --corpus PATH`: adapt the encoder to one corpus, without labels.

A user's documents are rarely Debian package descriptions. This recipe makes its own training pairs
from the corpus, the query always taken out of its passage (so the pair cannot be matched by copying):
- `--pseudo lead` (default): the document's first sentence (what most documents open with: a heading or
  what they are about, the shape of a user's question) -> the rest; a document of one sentence gives its
  title, if any. On GNU Info manuals it raised dense nDCG@10 on real queries by 0.047 (400 queries).
- `--pseudo cloze`: the inverse cloze task (Lee et al. 2019): a random sentence -> the rest of its
  document; a document with an informative title (two words or more) gives title -> whole text instead
  every other time. On perlpod this improved held-out *pseudo* pairs and hurt real queries.
A seeded slice of the pairs is held out. Then, starting from the shipped adapter:
1. optionally (`--llara-steps N`, default 0) LLaRA's EBAE/EBAR (training/llara.py) on the training
   documents' sentences: off, because on perlpod's held-out lead pairs 60 steps of it took the shipped
   adapter from 0.7910 to 0.7150 and the contrastive pass after it did not win that back;
2. BM25 hard negatives over the pseudo corpus (training/mine.py);
3. a short contrastive pass (training/retriever.py) continuing the shipped adapter (or stage 1),
   checkpoints every --save-every;
4. every checkpoint and the starting adapter are scored (dense nDCG@10) on the held-out pairs; the best
   is written to --output-dir with adapt.json (before, after, per checkpoint, timings). If nothing
   beats the starting adapter, adapt.json says so and --output-dir holds the starting adapter's copy.
The result is a servable adapter like the shipped one; its weights differ, so its revision differs and
collections indexed with the old one refuse it (re-index with it). Work files go to --output-dir/work/.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from pathlib import Path

from indexer.corpus import read_corpus
from models.loading import source_path
from store import Document
from training.data import sentences
from training.sources import Record, write_beir

log = logging.getLogger("reprank.train")
MIN_WORDS = 12  # a passage left after removing its query sentence must still say something


def pseudo_pair(doc: Document, rng: random.Random, kind: str = "lead") -> tuple[str, Document] | None:
    """(query, passage) from one document: `cloze` a random sentence and the rest, or (every other time)
    its title; `lead` the first sentence and the rest, or the title of a one-sentence document."""
    titled = len(doc.title.split()) >= 2
    if kind == "cloze" and titled and rng.random() < 0.5:
        return doc.title, Document(doc.doc_id, doc.text)
    parts = sentences(doc.text)
    if len(parts) < 2:
        return (doc.title, Document(doc.doc_id, doc.text)) if kind == "lead" and titled else None
    i = 0 if kind == "lead" else rng.randrange(len(parts))
    rest = " ".join(parts[:i] + parts[i + 1:])
    if len(rest.split()) < MIN_WORDS or len(parts[i].split()) < 4:
        return None
    return parts[i], Document(doc.doc_id, rest, title=doc.title)


def write_pseudo(docs: list[Document], out: Path, *, heldout: int, eval_docs: int, seed: int,
                 kind: str = "lead") -> dict:
    """The pairs as a BEIR folder (qrels train + heldout) and the held-out evaluation set in out/heldout/
    (its pairs over at most `eval_docs` documents); returns counts."""
    rng = random.Random(seed)
    pairs = [(q, p) for d in docs if (pair := pseudo_pair(d, rng, kind)) for q, p in [pair]]
    if len(pairs) < 2 * heldout:
        raise ValueError(f"{len(pairs)} pseudo pairs from {len(docs)} documents: too few to hold out {heldout}; "
                         "give more documents (with sentences of 4+ words, or titles) or a smaller --heldout")
    rng.shuffle(pairs)
    queries = {f"q{i}": q for i, (q, _) in enumerate(pairs)}
    rel = {f"q{i}": {p.doc_id} for i, (_, p) in enumerate(pairs)}
    corpus = {p.doc_id: Record(None, p.text, p.title) for _, p in pairs}
    held = dict(list(rel.items())[:heldout])
    train = dict(list(rel.items())[heldout:])
    write_beir(out, queries, corpus, {"train": train, "heldout": held})
    pool = sorted({d for ds in train.values() for d in ds})
    keep = {d for ds in held.values() for d in ds} | set(rng.sample(pool, max(0, min(len(pool), eval_docs - heldout))))
    write_beir(out / "heldout", queries, {d: r for d, r in corpus.items() if d in keep}, {"heldout": held})
    return {"documents": len(docs), "pairs": len(pairs), "train": len(train), "heldout": len(held),
            "heldout_corpus": len(keep)}


def recipe_args(recipe: str, argv: list[str]) -> argparse.Namespace:
    """A stage's arguments as `reprank train RECIPE` parses them (its defaults included)."""
    from training import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"), lambda p: None)
    args = parser.parse_args(["train", recipe, *argv])
    args.argv = ["train", recipe, *argv]
    return args


def heldout_ndcg(adapter: str, heldout: Path, store_dir: Path) -> float:
    """Dense nDCG@10 of an adapter on the held-out pairs (their own collection per adapter revision)."""
    from models import open_encoder
    from search.evaluate import evaluate
    from store import open_store
    from store.config import StoreConfig

    with open_store(StoreConfig(store_dir)) as store, open_encoder(adapter, "smollm2-retriever") as enc:
        metrics, _, _ = evaluate(heldout, "heldout", enc, None, store, pipelines=("dense",), progress=False)
    return metrics["dense"]["ndcg@10"]


def run(args) -> int:
    from training import common, llara, retriever
    from training.mine import mine_bm25

    out, began = Path(args.output_dir), time.perf_counter()
    work = out / "work"
    data = work / "pairs"
    timings: dict[str, float] = {}
    docs = list(read_corpus(args.corpus))[: args.max_docs]
    if not docs:
        raise ValueError(f"{args.corpus}: no documents")
    counts = write_pseudo(docs, data, heldout=args.heldout, eval_docs=args.eval_docs, seed=args.seed,
                          kind=args.pseudo)
    log.info("adapt: %d documents -> %d pseudo pairs (%d to train, %d held out)", counts["documents"],
             counts["pairs"], counts["train"], counts["heldout"])

    def stage(name: str, fn):
        start = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        log.info("adapt: %s done in %.0f s (%.0f s so far)", name, timings[name], time.perf_counter() - began)
        return result

    store = work / "store"
    before = stage("score the starting adapter", lambda: heldout_ndcg(args.init, data / "heldout", store))
    log.info("adapt: held-out dense nDCG@10 of %s: %.4f", args.init, before)
    threads = ["--threads", str(args.threads)] if args.threads else []
    common_flags = ["--dataset", str(data), "--seed", str(args.seed), "--lora-layers", "10", *threads]
    contrastive_init = args.init
    if args.llara_steps:
        contrastive_init = str(work / "llara")
        stage("LLaRA (EBAE + EBAR)", lambda: llara.run(recipe_args("llara", [
            *common_flags, "--output-dir", contrastive_init, "--init", args.init, "--max-steps",
            str(args.llara_steps), "--batch-size", "16", "--lr", "1e-4", "--warmup-steps", "5",
            "--passage-max-length", "80", "--save-every", str(args.llara_steps)])))
    negatives = work / "negatives.jsonl"
    stage("BM25 hard negatives", lambda: mine_bm25(data, negatives, depth=30, seed=args.seed))
    stage("contrastive", lambda: retriever.run(recipe_args("retriever", [
        *common_flags, "--output-dir", str(work / "retriever"), "--init", contrastive_init,
        "--hard-negatives", str(negatives), "--max-steps", str(args.steps), "--batch-size", "16",
        "--group-size", "2", "--lr", "1e-4", "--warmup-steps", "5", "--temperature", "0.02",
        "--query-max-length", "48", "--passage-max-length", "144", "--save-every", str(args.save_every),
        "--keep-checkpoints", "100", "--freeze-added-tokens"])))

    scores = {"start": before}
    best, best_score = None, before
    base = json.loads((work / "retriever" / "adapter_config.json").read_text())["base_model_name_or_path"]
    for ckpt in common.checkpoints(work / "retriever"):
        folder = work / f"adapter-{ckpt.name}"
        common.export_checkpoint(recipe_args("export", [str(ckpt), "--output-dir", str(folder),
                                                        "--preset", "smollm2-llara", "--base", base]))
        score = stage(f"score {ckpt.name}", lambda f=folder: heldout_ndcg(str(f), data / "heldout", store))
        scores[ckpt.name] = score
        log.info("adapt: held-out dense nDCG@10 at %s: %.4f (start %.4f)", ckpt.name, score, before)
        if score > best_score:
            best, best_score = folder, score
    source = best or source_path(args.init)
    for f in source.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    report = {"corpus": str(args.corpus), "init": args.init, "pseudo": args.pseudo,
              "llara_steps": args.llara_steps, "steps": args.steps, **counts, "heldout_ndcg@10": scores,
              "chosen": best.name.removeprefix("adapter-") if best else "start", "improved": best is not None,
              "seconds": timings, "total_seconds": round(time.perf_counter() - began, 1)}
    (out / "adapt.json").write_text(json.dumps(report, indent=1) + "\n")
    verdict = (f"improved {before:.4f} -> {best_score:.4f} ({report['chosen']})" if best
               else f"no checkpoint beat the starting adapter ({before:.4f}): keep it")
    log.info("adapt: %s; adapter in %s, %.0f min in all", verdict, out, report["total_seconds"] / 60)
    return 0
