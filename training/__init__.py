"""Training recipes (`reprank train llara | retriever | reranker | mine`) and their data (`train sources`, `train mix`);
see RECIPES.md beside this file.

Only the command-line flags live here, so `reprank --help` does not import torch; each recipe module
has a `run(args)`.
"""

from __future__ import annotations

import argparse

RECIPES = {
    "llara": "LLaRA adaptation on the train side of the corpus: EBAE + EBAR bag-of-tokens (+ AR) losses",
    "retriever": "contrastive encoder training: InfoNCE over in-batch and hard negatives",
    "reranker": "RankLLaMA-style score head + LoRA: softmax cross-entropy over 1 positive + hard negatives",
}


def _shared(p: argparse.ArgumentParser, *, lr: float, batch_size: int, passage_max_length: int) -> None:
    p.add_argument("--dataset", required=True, help="BEIR folder; only qrels/train.tsv is read")
    p.add_argument("--output-dir", required=True, help="adapter folder; checkpoints go in checkpoint-STEP/")
    p.add_argument("--base", help="base model as loading.resolve accepts it (default: the --init adapter's base, "
                   "else bundled:smollm2); written as given into adapter_config.json")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=batch_size, help="queries (or texts) per micro-batch")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, help="default 2 x r")
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--lora-layers", type=int, help="LoRA on the top N decoder layers only (default all): the "
                   "backward pass stops there, so a CPU step costs far less")
    p.add_argument("--query-max-length", type=int, default=32, help="tokens, template included")
    p.add_argument("--passage-max-length", type=int, default=passage_max_length, help="tokens, template included")
    p.add_argument("--limit-train-queries", type=int, help="a seeded sample of the train queries (CPU runs)")
    p.add_argument("--exclude-queries", metavar="QRELS", help="a qrels TSV whose queries are never trained on, e.g. "
                   "a held-out set from benchmarks/make_heldout.py (mine with the same flag)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (weights stay fp32)")
    p.add_argument("--bf16", action="store_true", help="run forward and backward under bf16 autocast (GPU): "
                   "several times faster matmuls; weights, optimizer and the exported adapter stay fp32/fp16")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass: much less memory, about 30%% slower")
    p.add_argument("--save-every", type=int, default=25, help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")


def add_parsers(sub, common_flags) -> None:
    """`reprank train ...` under the top-level subparsers; common_flags adds cli's model/store flags."""
    p = sub.add_parser("train", help="train LoRA adapters (llara, retriever, reranker) and mine hard negatives")
    recipes = p.add_subparsers(dest="recipe", required=True)

    r = recipes.add_parser("llara", help=RECIPES["llara"])
    _shared(r, lr=1e-4, batch_size=16, passage_max_length=64)
    r.add_argument("--preset", default="smollm2-llara", help="an LLaRA-shaped encoder preset")
    r.add_argument("--init", help="adapter to continue (e.g. the shipped retriever, as `train adapt` does)")
    r.add_argument("--ar-weight", type=float, default=1.0, help="weight of the next-token loss on the text")

    r = recipes.add_parser("retriever", help=RECIPES["retriever"])
    _shared(r, lr=1e-4, batch_size=8, passage_max_length=128)
    r.add_argument("--init", help="adapter to continue (e.g. the llara output); its LoRA rank is kept")
    r.add_argument("--preset", help="encoder preset (default: the --init adapter's, else smollm2)")
    r.add_argument("--hard-negatives", help="JSONL from `reprank train mine`")
    r.add_argument("--group-size", type=int, default=4, help="1 positive + N-1 negatives per query")
    r.add_argument("--temperature", type=float, default=0.01)
    r.add_argument("--freeze-added-tokens", action="store_true",
                   help="keep the --init adapter's added token rows fixed: they sit at the input, so the backward "
                   "pass then stops at the lowest LoRA layer (with --lora-layers, far faster on CPU)")

    r = recipes.add_parser("reranker", help=RECIPES["reranker"])
    _shared(r, lr=1e-4, batch_size=2, passage_max_length=160)
    r.add_argument("--preset", help="a score-head preset, or a query-likelihood one (smollm2-reranker) to fine-tune "
                   "its LM scores (default: the --init adapter's, else smollm2-rankllama)")
    r.add_argument("--init", help="reranker adapter to continue (e.g. the shipped one on new kinds of text), "
                   "score head included; its LoRA rank is kept")
    r.add_argument("--hard-negatives", help="JSONL from `reprank train mine` with the trained retriever")
    r.add_argument("--group-size", type=int, default=8, help="1 positive + N-1 negatives per query")

    r = recipes.add_parser("adapt", help="adapt the encoder to one corpus without labels: pseudo queries from "
                           "its own documents, a contrastive pass from the shipped adapter, the best checkpoint "
                           "on held-out pairs (about 50 min for 5,000 passages on 2 CPU cores)")
    r.add_argument("--corpus", required=True, help="BEIR corpus.jsonl[.gz], JSONL or Parquet (id, text, title)")
    r.add_argument("--output-dir", required=True, help="the adapted encoder (serve it with --model DIR "
                   "--model-preset smollm2-retriever); work files in DIR/work/")
    r.add_argument("--init", default="bundled:smollm2-retriever", help="the adapter to start from")
    r.add_argument("--max-docs", type=int, default=5000, help="the first N documents of the corpus")
    r.add_argument("--pseudo", choices=("lead", "cloze"), default="lead", help="pseudo queries: the first "
                   "sentence of each document (often its heading) or a random one (inverse cloze), taken out "
                   "of its passage")
    r.add_argument("--heldout", type=int, default=150, help="pseudo pairs held out to choose the checkpoint")
    r.add_argument("--eval-docs", type=int, default=1000, help="corpus size of the held-out evaluation")
    r.add_argument("--llara-steps", type=int, default=0, help="EBAE/EBAR steps before the contrastive pass "
                   "(default none: the contrastive pass continues --init itself)")
    r.add_argument("--steps", type=int, default=120, help="contrastive steps (16 pairs each)")
    r.add_argument("--save-every", type=int, default=40, help="contrastive steps between scored checkpoints")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--threads", type=int)

    r = recipes.add_parser("export", help="write a run's checkpoint-STEP/ folder as a servable adapter "
                           "(a run stopped before its last step)")
    r.add_argument("checkpoint", help="the checkpoint-STEP folder")
    r.add_argument("--output-dir", required=True)
    r.add_argument("--preset", required=True, help="the run's preset (smollm2-llara, smollm2-rankllama, ...)")
    r.add_argument("--base", default="bundled:smollm2", help="written into adapter_config.json as given")

    r = recipes.add_parser("sources", help="build a BEIR set from documentation installed here: training pairs "
                           "(manpages, pydoc, sphinx: train + heldout splits) or an out-of-domain dev set "
                           "(perlpod, info)")
    r.add_argument("--source", required=True, choices=("manpages", "pydoc", "sphinx", "perlpod", "info"))
    r.add_argument("--output", required=True, help="the BEIR folder to write")
    r.add_argument("--root", help="where the source lies (default: /usr/share/man, this Python's site-packages, "
                   "/usr/share/doc, /usr/share/perl/5.* and /usr/lib/*/perl/5.*, /usr/share/info)")
    r.add_argument("--max-queries", type=int, help="train: a seeded sample of the train queries (default all); "
                   "dev: queries in the set (default 400)")
    r.add_argument("--max-docs", type=int, default=3000, help="dev: corpus size, relevant documents included")
    r.add_argument("--heldout", type=int, default=150, help="train: queries in the heldout split")
    r.add_argument("--per-package", type=int,
                   help="manpages, pydoc, sphinx: most pairs from one package or project (150, 300, 1500)")
    r.add_argument("--seed", type=int, default=42)

    r = recipes.add_parser("mix", help="one training set from the train splits of several BEIR sets (e.g. Debian "
                           "+ manpages + pydoc): seeded query samples, ids prefixed by part")
    r.add_argument("--part", action="append", required=True, metavar="NAME=PATH[:N]",
                   help="a BEIR set and how many of its train queries (default all); repeat per part")
    r.add_argument("--exclude", action="append", default=[], metavar="NAME=QRELS",
                   help="a part's queries never to take (a held-out set)")
    r.add_argument("--output", required=True, help="the BEIR folder to write")
    r.add_argument("--seed", type=int, default=42)

    r = recipes.add_parser("mine", help="hard negatives: train queries against the train side of the corpus, "
                           "through the project's own index (positives dropped)")
    r.add_argument("--dataset", required=True)
    r.add_argument("--output", required=True, help="JSONL file of {query_id, negatives}")
    r.add_argument("--limit-train-queries", type=int, help="same seeded sample as the training run")
    r.add_argument("--exclude-queries", metavar="QRELS", help="same as the training run's")
    r.add_argument("--corpus-limit", type=int, help="index the positives plus random train documents up to this")
    r.add_argument("--depth", type=int, default=30, help="negatives kept per query")
    r.add_argument("--method", choices=("dense", "hybrid", "bm25"), default="dense")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--collection", help="default: derived from dataset, encoder and the pool")
    r.add_argument("--threads", type=int)
    r.add_argument("--no-progress", action="store_true")
    common_flags(r)
