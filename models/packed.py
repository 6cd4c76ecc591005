"""Padding-free forward: a batch's sequences packed into one row, attention kept inside each sequence.

The linear layers, which are most of an LLM's cost, then see exactly the real tokens: no FLOP goes to
a pad token, whatever the mix of lengths. Position ids restart at 0 for every sequence, so RoPE sees
each text as if it were alone. Attention runs per sequence: on CUDA through PyTorch's varlen
FlashAttention kernel (`torch.nn.attention.varlen.varlen_attn`, one launch for the whole batch);
elsewhere through one causal SDPA call per sequence, which costs exactly the real attention FLOPs.

The attention function is registered with transformers' AttentionInterface under `ATTENTION`, with
a mask function that builds nothing (the sequence bounds travel as `packed_cu_seqlens`), so a model
switched to it with `set_attn_implementation(ATTENTION)` keeps its own code for everything else.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTENTION = "reprank_packed"


@dataclass
class Packed:
    input_ids: torch.Tensor  # [1, total]
    position_ids: torch.Tensor  # [1, total], restarting at 0 for each sequence
    cu_seqlens: torch.Tensor  # [n + 1] int32 offsets of the sequences in the row
    max_length: int


def layout(seqs: list[list[int]]) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, position_ids, cu_seqlens) of the sequences laid end to end, positions restarting at 0."""
    cu = [0]
    for s in seqs:
        cu.append(cu[-1] + len(s))
    return [t for s in seqs for t in s], [i for s in seqs for i in range(len(s))], cu


def pack(seqs: list[list[int]], device) -> Packed:
    if not seqs or min(map(len, seqs)) == 0:
        raise ValueError("pack needs at least one sequence and no empty one")
    ids, positions, cu = layout(seqs)
    return Packed(torch.tensor([ids], device=device), torch.tensor([positions], device=device),
                  torch.tensor(cu, dtype=torch.int32, device=device), max(map(len, seqs)))


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     packed_cu_seqlens=None, packed_max_length=None, **kwargs):
    """transformers attention-function signature: q [1, Hq, T, D], k/v [1, Hkv, T, D] -> ([1, T, Hq, D], None)."""
    if packed_cu_seqlens is None:
        raise ValueError(f"the {ATTENTION} attention needs packed_cu_seqlens: run the model through models.packed")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, H, D]
    gqa = q.shape[1] != k.shape[1]
    if q.is_cuda:
        varlen_attn, native_gqa = _varlen()
        extra = {}
        if gqa and native_gqa:
            extra["enable_gqa"] = True
        elif gqa:  # an older torch without the GQA flag: give every query head its own copy of k and v
            k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
        out = varlen_attn(q, k, v, packed_cu_seqlens, packed_cu_seqlens, packed_max_length, packed_max_length,
                          scale=scaling, window_size=(-1, 0), **extra)
    else:
        out = torch.empty_like(q)
        bounds = packed_cu_seqlens.tolist()
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            if start == end:  # an unused slot of a CUDA-graph frame (models.graphs)
                continue
            qs, ks, vs = (x[start:end].transpose(0, 1) for x in (q, k, v))  # [H, L, D]
            out[start:end] = F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=True, scale=scaling, enable_gqa=gqa).transpose(0, 1)
    return out[None], None


@functools.cache
def _varlen():
    """torch's varlen FlashAttention and whether it takes enable_gqa (looked up once, not per layer)."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn, "enable_gqa" in inspect.signature(varlen_attn).parameters


def _no_mask(*args, **kwargs):
    return None


def register() -> None:
    """Make `ATTENTION` a valid attn_implementation for every transformers model (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, packed_attention)
    AttentionMaskInterface.register(ATTENTION, _no_mask)


def packed_forward(backbone: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                   cu_seqlens: torch.Tensor, max_length: int) -> torch.Tensor:
    """Final hidden states of a packed row, [total, H]. The all-ones mask is never built into anything (the
    mask function is a no-op); it only stops transformers from inspecting position_ids for packing, a
    host sync that a CUDA graph capture would refuse."""
    mask = torch.ones_like(input_ids)
    return backbone(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, use_cache=False,
                    packed_cu_seqlens=cu_seqlens, packed_max_length=max_length).last_hidden_state[0]


def last_packed(hidden: torch.Tensor, lengths: list[int], k: int) -> torch.Tensor:
    """Packed hidden [total (+ filler), H] -> [n, k, H]: each sequence's last k states, as runtime.gather_last
    reads padded rows (a sequence shorter than k repeats its first state at the front)."""
    n = torch.tensor(lengths, device=hidden.device)
    offsets = (n[:, None] - k + torch.arange(k, device=hidden.device)[None, :]).clamp(min=0)
    return hidden[offsets + (n.cumsum(0) - n)[:, None]]


def pool_packed(hidden: torch.Tensor, lengths: list[int], k: int) -> torch.Tensor:
    """Packed hidden [total (+ filler), H] -> [n, H]: the mean of each sequence's last k states, or of all
    of them when k == 0, as runtime.pool does for padded rows."""
    if k:
        return last_packed(hidden, lengths, k).mean(dim=1)
    n = torch.tensor(lengths, device=hidden.device)
    ends = n.cumsum(0)
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), n)
    sums = torch.zeros(len(lengths), hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
    return sums.index_add_(0, segment, hidden[: int(ends[-1])]) / n[:, None].to(hidden.dtype)


def packed_hidden(backbone: torch.nn.Module, seqs: list[list[int]]) -> torch.Tensor:
    """[total, H] final states of the sequences packed into one row, without padding."""
    p = pack(seqs, next(backbone.parameters()).device)
    return packed_forward(backbone, p.input_ids, p.position_ids, p.cu_seqlens, p.max_length)


def packed_pooled(backbone: torch.nn.Module, seqs: list[list[int]], k: int) -> torch.Tensor:
    """[n, H] pooled final states (see pool_packed) from one packed forward."""
    return pool_packed(packed_hidden(backbone, seqs), [len(s) for s in seqs], k)
