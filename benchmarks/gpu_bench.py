"""GPU speed of reprank's encoder and reranker path against naive Hugging Face, in one run.

A Llama-2-7B-shaped model with random bf16 weights (speed does not depend on weight values) runs:
- indexing: passages with MS MARCO-like lengths (log-normal, mean ~80 tokens): naive HF in arrival
  order and length-sorted (padded batches of 32, SDPA), then reprank's packed token-budget path;
- one 16-token query: naive HF forward against reprank's encoder (CUDA graph bucket);
- reranking one request's 100 candidates (~9.1k tokens): naive HF in one padded batch and in sorted
  batches of 25, against reprank's reranker;
- 32 concurrent clients each reranking 100 candidates: real tokens/s against the offline rate.
MFU counts 2 x non-embedding parameters per real token against a bf16 matmul measured in the same
run. Figures go to benchmarks/results/gpu-DATE.json and are appended to benchmarks/RESULTS.md.

    python benchmarks/gpu_bench.py            # needs CUDA; exits 0 with a note when there is none
    python benchmarks/gpu_bench.py --tiny     # a small model on CPU: checks the script, not the speed
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import wait
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SHAPE_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
SHAPE_TINY = dict(vocab_size=32000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of a large square matmul: the ceiling MFU is measured against."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20
    return 2 * n**3 * reps / timed(lambda: [a @ b for _ in range(reps)], device)


def lengths(n: int, mean: float, rng: np.random.Generator, lo: int = 8, hi: int = 512) -> list[int]:
    sigma = 0.5
    raw = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, n)
    return [int(x) for x in np.clip(raw, lo, hi)]


def build(shape: dict, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(**shape, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = LlamaModel(cfg).eval()
            head = torch.nn.Linear(cfg.hidden_size, 1)
        finally:
            torch.set_default_dtype(prev)
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    return model, head, params


def naive_last(model, seqs: list[list[int]], batch: int, device) -> None:
    """What a plain transformers user writes: padded batches, SDPA, the last real state of each row."""
    with torch.inference_mode():
        for i in range(0, len(seqs), batch):
            chunk = seqs[i : i + batch]
            width = max(map(len, chunk))
            ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            hidden[torch.arange(len(chunk)), mask.sum(1) - 1].float().cpu()


def runtimes(model, head, device, dim: int, batch_tokens: int, tokenizer: str):
    """reprank's Encoder and Reranker around the in-memory model (no 13 GB round trip through disk)."""
    from models.encoder import Encoder
    from models.loading import LoadedModel, load_tokenizer, resolve
    from models.presets import encoder_preset, reranker_preset
    from models.reranker import Reranker

    tok = load_tokenizer(resolve(tokenizer))  # only for the templates' BOS/EOS ids
    kw = dict(max_batch_tokens=batch_tokens, max_batch_size=512, max_queue_tokens=10_000_000, packed=True)
    enc = Encoder(LoadedModel(tok, model, None, dim, device, "random-7b"), encoder_preset("repllama"), **kw)
    rr = Reranker(LoadedModel(tok, model, head, dim, device, "random-7b"), reranker_preset("rankllama"), **kw)
    return enc, rr


def run_batcher(runtime, seqs: list[list[int]]) -> None:
    wait(runtime.batcher.submit(seqs))


def p50(fn, device, reps: int) -> float:
    fn()  # warm-up (and CUDA-graph capture)
    return statistics.median(timed(fn, device) for _ in range(reps)) * 1000


class Sections:
    """Each measurement runs on its own: one that fails records its error and the rest still run, and the
    figures so far are rewritten to --output after each, so a run cut short still returns them."""

    def __init__(self, res: dict, output: Path | None):
        self.res, self.output = res, output

    def run(self, name: str, fn) -> None:
        began = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the other sections still run
            self.res.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:500]
        print(f"[{name}] {time.perf_counter() - began:.1f} s", flush=True)
        if self.output:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.output.write_text(json.dumps(self.res, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small model on CPU: a check of the script")
    ap.add_argument("--passages", type=int, default=4096)
    ap.add_argument("--batch-tokens", type=int, default=32768, help="reprank's token budget per forward")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--load-seconds", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--tokenizer", default="bundled:smollm2", help="any tokenizer source (only BOS/EOS are used)")
    ap.add_argument("--output", type=Path, help="default benchmarks/results/gpu-DATE.json (none with --tiny)")
    args = ap.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device here; nothing measured (try --tiny to check the script on CPU)")
        return
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    if args.tiny:
        args.passages, args.reps, args.clients, args.load_seconds = 64, 3, 4, 2.0
    shape = SHAPE_TINY if args.tiny else SHAPE_7B
    rng = np.random.default_rng(0)
    vocab = shape["vocab_size"]

    def seqs_of(lens):
        return [rng.integers(3, vocab, n).tolist() for n in lens]

    today = date.today().isoformat()
    output = args.output or (None if args.tiny else ROOT / f"benchmarks/results/gpu-{today}.json")
    peak = matmul_peak(device, dtype, 512 if args.tiny else 8192)
    model, head, params = build(shape, device, dtype)
    passages = seqs_of(lengths(args.passages, 80, rng))
    real = sum(map(len, passages))
    res: dict = {"date": today, "device": torch.cuda.get_device_name(device)
                 if device.type == "cuda" else "cpu (--tiny check)", "shape": "tiny" if args.tiny else "llama-2-7b",
                 "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
                 "matmul_peak_tflops": round(peak / 1e12, 1), "passages": len(passages), "passage_tokens": real}
    sections = Sections(res, output)

    def mfu(tok_s: float) -> float:
        return round(2 * params * tok_s / peak, 3)

    by_len = sorted(passages, key=len)
    query = [rng.integers(3, vocab, 16).tolist()]
    cands = seqs_of(lengths(100, 91, rng))
    res["rerank100_tokens"] = sum(map(len, cands))

    def naive_indexing():
        naive_last(model, passages[:64], 32, device)  # warm-up
        for name, order in (("naive_arrival", passages), ("naive_sorted", by_len)):
            s = timed(lambda o=order: naive_last(model, o, 32, device), device)
            res[f"{name}_tokens_per_s"], res[f"{name}_mfu"] = round(real / s), mfu(real / s)

    def naive_latency():
        res["naive_query_p50_ms"] = round(p50(lambda: naive_last(model, query, 1, device), device, args.reps), 2)
        res["naive_rerank100_padded_p50_ms"] = round(p50(lambda: naive_last(model, cands, 100, device), device,
                                                         args.reps), 1)
        res["naive_rerank100_sorted25_p50_ms"] = round(
            p50(lambda: naive_last(model, sorted(cands, key=len), 25, device), device, args.reps), 1)

    # naive HF first: reprank's runtimes switch the shared model to packed attention
    sections.run("naive_indexing", naive_indexing)
    sections.run("naive_latency", naive_latency)
    enc, rr = runtimes(model, head, device, shape["hidden_size"], args.batch_tokens, args.tokenizer)

    def encode():
        run_batcher(enc, passages[:256])  # warm-up
        s = timed(lambda: run_batcher(enc, passages), device)
        res["encode_tokens_per_s"], res["encode_mfu"] = round(real / s), mfu(real / s)

    def query_latency():
        res["query_p50_ms"] = round(p50(lambda: run_batcher(enc, query), device, args.reps), 2)

    def rerank_latency():
        res["rerank100_p50_ms"] = round(p50(lambda: run_batcher(rr, cands), device, args.reps), 1)

    def concurrent():
        done = [0]
        stop = time.perf_counter() + args.load_seconds
        lock = threading.Lock()

        def client():
            while time.perf_counter() < stop:
                run_batcher(rr, cands)
                with lock:
                    done[0] += res["rerank100_tokens"]

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        load_tok_s = done[0] / (time.perf_counter() - t)
        res["concurrent_clients"] = args.clients
        res["concurrent_rerank_tokens_per_s"] = round(load_tok_s)
        res["concurrent_vs_offline"] = round(load_tok_s / res["encode_tokens_per_s"], 3)

    sections.run("encode", encode)
    sections.run("query_latency", query_latency)
    sections.run("rerank_latency", rerank_latency)
    sections.run("concurrent", concurrent)
    enc.close()
    rr.close()

    print(json.dumps(res, indent=1))
    if output and not args.tiny:
        with open(ROOT / "benchmarks/RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n### GPU bench, {res['date']}, {res['device']}\n\n"
                    + "\n".join(f"- {k}: {v}" for k, v in res.items() if k not in ("date", "device")) + "\n")
    if res.get("errors"):
        raise SystemExit(f"gpu_bench: {len(res['errors'])} section(s) failed: {', '.join(res['errors'])}")


if __name__ == "__main__":
    main()
