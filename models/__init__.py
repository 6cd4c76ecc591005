"""What the LLM computes: presets, loading, batching, encoder, reranker. Knows nothing of HTTP or Qdrant."""

from __future__ import annotations

import json
from pathlib import Path

from models.presets import ENCODERS, RERANKERS, encoder_preset, reranker_preset


def _pick(model: str, preset: str | None, presets: dict, flag: str) -> tuple[str, str]:
    """(source, preset name) for `--model`: a preset name (its bundled weights) or a local path."""
    if model in presets:
        default = presets[model].default_model
        if default is None:
            raise ValueError(
                f"preset {model!r} ships no weights; pass the checkpoint folder with {flag} PATH "
                f"and the preset with {flag}-preset {model}"
            )
        return default, preset or model
    meta = Path(model) / "reprank.json"  # written next to our own trained adapters
    if preset is None and meta.exists():
        preset = json.loads(meta.read_text()).get("preset")
    if preset is None:
        raise ValueError(f"{model}: name its preset ({', '.join(presets)}) with {flag}-preset")
    return model, preset


def encoder_source(model: str, preset: str | None = None) -> tuple[str, str]:
    """(source, preset name) an encoder would load, without loading it (a Ray driver names the collection)."""
    return _pick(model, preset, ENCODERS, "--model")


def reranker_source(model: str, preset: str | None = None) -> tuple[str, str]:
    """(source, preset name) a reranker would load, without loading it."""
    return _pick(model, preset, RERANKERS, "--reranker")


def open_encoder(model: str = "smollm2-retriever", preset: str | None = None, *, base=None, device="cpu", dtype=None,
                 engine: str = "torch", **batching):
    """An Encoder for a preset name or a local checkpoint/adapter path, on the torch or the vLLM engine."""
    import torch

    from models.encoder import Encoder
    from models.loading import load

    source, name = encoder_source(model, preset)
    p = encoder_preset(name)
    if engine == "vllm":
        from models.vllm_engine import open_vllm

        return open_vllm(source, p, base=base, dtype=dtype, **batching)
    loaded = load(source, "none", base=base, device=device, dtype=dtype or torch.float32,
                  special_tokens=p.special_tokens)
    return Encoder(loaded, p, **batching)


def open_reranker(model: str = "smollm2-rankllama-trained", preset: str | None = None, *, base=None, device="cpu",
                  dtype=None, engine: str = "torch", **batching):
    """A Reranker for a preset name or a local checkpoint/adapter path, on the torch or the vLLM engine."""
    import torch

    from models.loading import load
    from models.reranker import Reranker

    source, name = reranker_source(model, preset)
    p = reranker_preset(name)
    if engine == "vllm":
        from models.vllm_engine import open_vllm

        return open_vllm(source, p, base=base, dtype=dtype, **batching)
    loaded = load(source, p.head, base=base, device=device, dtype=dtype or torch.float32, yes_no=p.yes_no)
    return Reranker(loaded, p, **batching)
