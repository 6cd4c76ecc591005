"""CPU indexing speed of the bundled SmolLM2-135M: reprank's encoder against plain Hugging Face, same run.

Both encode the same Debian passages with the same template and pooling (so the vectors must agree:
the bench checks it) and the same threads. The baseline is what a user writes with transformers:
the texts sorted by length, padded batches of --hf-batch, fp32, SDPA. reprank runs its own path: the
token-budget batcher (small batches on CPU) through models.open_encoder; its packed layout (the CUDA
path, per-sequence attention on CPU) is timed too, for the record. They alternate in --rounds rounds so that background load hits both alike; the ratio of the summed times is the figure.

    python benchmarks/cpu_bench.py --docs 200            # last line: cpu_speedup_vs_hf=<ratio>
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from indexer.corpus import read_corpus
from models import open_encoder
from models.loading import resolve
from service.settings import Settings
from store import passage_text

ROOT = Path(__file__).resolve().parent.parent


def hf_baseline(tok, model, texts: list[str], batch: int) -> np.ndarray:
    """Plain transformers: tokenize, sort by length, pad, forward, read the EOS state, normalise."""
    seqs = [tok("passage: " + t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            enc = tok.pad({"input_ids": [seqs[i] for i in idx]}, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            last = enc["attention_mask"].sum(1) - 1  # right padding
            vec = torch.nn.functional.normalize(hidden[torch.arange(len(idx)), last], dim=-1)
            out[idx] = vec.numpy()
    return out


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared/data/debian-packages/small"))
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hf-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--output", help="JSON file for the figures (default: benchmarks/results/cpu-DATE.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    texts = [passage_text(d) for d in itertools.islice(read_corpus(args.corpus), args.docs)]
    from transformers import AutoModel, AutoTokenizer

    path, kwargs = resolve("bundled:smollm2").hf_args()
    tok = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
    kw = Settings().model_kwargs()  # the service's own defaults on this device
    encoder = open_encoder("smollm2", **kw)
    packed = open_encoder("smollm2", packed=True, **kw)  # the CUDA layout, measured here for the record
    for enc in (encoder, packed):
        enc.encode(texts[:4], "passage")  # warm-up, as the service does before it is ready
    timings = {"hf": 0.0, "reprank": 0.0, "packed": 0.0}
    for _ in range(args.rounds):
        t = time.perf_counter()
        ref = hf_baseline(tok, model, texts, args.hf_batch)
        timings["hf"] += time.perf_counter() - t
        t = time.perf_counter()
        ours = encoder.encode(texts, "passage").vectors
        timings["reprank"] += time.perf_counter() - t
        t = time.perf_counter()
        ours_packed = packed.encode(texts, "passage").vectors
        timings["packed"] += time.perf_counter() - t
    encoder.close()
    packed.close()
    cos = np.minimum((ref * ours).sum(1), (ref * ours_packed).sum(1))
    assert cos.min() > 0.999, f"reprank and plain HF disagree: min cosine {cos.min():.5f}"

    n = len(texts) * args.rounds
    result = {
        "date": date.today().isoformat(), "device": f"{cpu_name()}, {args.threads} threads", "docs": len(texts), "rounds": args.rounds,
        "hf_docs_per_s": round(n / timings["hf"], 2), "reprank_docs_per_s": round(n / timings["reprank"], 2),
        "reprank_packed_docs_per_s": round(n / timings["packed"], 2),
        "hf_batch": args.hf_batch, "reprank_max_batch_tokens": kw["max_batch_tokens"],
        "min_cosine": round(float(cos.min()), 6), "cpu_speedup_vs_hf": round(timings["hf"] / timings["reprank"], 3),
    }
    out = Path(args.output or ROOT / f"benchmarks/results/cpu-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"cpu_speedup_vs_hf={result['cpu_speedup_vs_hf']}")


if __name__ == "__main__":
    main()
