"""The padding-free (packed) forward and the CUDA-graph frame: same states as the padded reference.

The frame layout and the packed attention's plumbing run on CPU here; the CUDA kernels (varlen
FlashAttention, graph capture) and bf16 run only where a GPU is present and are skipped otherwise.
"""

from __future__ import annotations

import pytest
import torch
from tiny import build
from transformers import AutoTokenizer

from models.graphs import GraphedBackbone, frame
from models.loading import load
from models.packed import ATTENTION, packed_forward, packed_pooled, pool_packed, register
from models.runtime import pad_right, pool

SEQS = [[5, 6, 7], list(range(10, 60)), [8, 9], list(range(3, 20))]
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def backbone(request, tmp_path_factory, tokenizer_dir):
    folder = build(tmp_path_factory.mktemp(request.param), AutoTokenizer.from_pretrained(tokenizer_dir), request.param)
    return load(str(folder)).backbone


def padded_reference(backbone, seqs, k):
    backbone.set_attn_implementation("sdpa")
    ids, mask, lengths = pad_right(seqs, 0, next(backbone.parameters()).device)
    with torch.inference_mode():
        return pool(backbone(input_ids=ids, attention_mask=mask).last_hidden_state, lengths, k).float()


def test_frame_lays_sequences_then_empty_slots_then_one_filler():
    ids, positions, cu = frame([[1, 2], [3, 4, 5]], tokens=8, slots=4, pad_id=0)
    assert ids == [1, 2, 3, 4, 5, 0, 0, 0]
    assert positions == [0, 1, 0, 1, 2, 0, 1, 2]
    assert cu == [0, 2, 5, 5, 5, 8]
    with pytest.raises(ValueError, match="do not fit"):
        frame([[1] * 5, [2] * 5], tokens=8, slots=4, pad_id=0)
    with pytest.raises(ValueError, match="do not fit"):
        frame([[1]] * 5, tokens=8, slots=4, pad_id=0)


@pytest.mark.parametrize("k", [0, 1, 2], ids=["mean", "last", "last2"])
def test_packed_and_framed_forwards_match_the_padded_one(backbone, k):
    ref = padded_reference(backbone, SEQS, k)
    register()
    backbone.set_attn_implementation(ATTENTION)
    try:
        with torch.inference_mode():
            assert torch.allclose(packed_pooled(backbone, SEQS, k), ref, atol=1e-5)
            ids, positions, cu = frame(SEQS, tokens=128, slots=6, pad_id=0)
            hidden = packed_forward(backbone, torch.tensor([ids]), torch.tensor([positions]),
                                    torch.tensor(cu, dtype=torch.int32), 128)
        assert torch.allclose(pool_packed(hidden, [len(s) for s in SEQS], k), ref, atol=1e-5)
    finally:
        backbone.set_attn_implementation("sdpa")


def test_a_model_without_the_bounds_refuses_packed_attention(backbone):
    register()
    backbone.set_attn_implementation(ATTENTION)
    try:
        with pytest.raises(ValueError, match="packed_cu_seqlens"):
            backbone(input_ids=torch.tensor([[1, 2, 3]]))
    finally:
        backbone.set_attn_implementation("sdpa")


@gpu
@pytest.mark.gpu
def test_bf16_packed_and_graphed_on_cuda_match_the_fp32_reference(backbone):
    ref = torch.nn.functional.normalize(padded_reference(backbone, SEQS, 1), dim=-1)
    register()
    gpu_model = backbone.to("cuda", torch.bfloat16)
    gpu_model.set_attn_implementation(ATTENTION)
    try:
        with torch.inference_mode():
            packed = packed_pooled(gpu_model, SEQS, 1).float().cpu()
            graphed = GraphedBackbone(gpu_model, 0).pooled(SEQS, 1).float().cpu()
            again = GraphedBackbone(gpu_model, 0)
            again.pooled(SEQS[:1], 1)  # capture, then replay with other inputs in the same bucket
            replayed = again.pooled(SEQS[2:], 1).float().cpu()
        for out, want in ((packed, ref), (graphed, ref), (replayed, ref[2:])):
            cos = (torch.nn.functional.normalize(out, dim=-1) * want).sum(-1)
            assert (cos >= 0.999).all(), cos
    finally:
        backbone.to("cpu", torch.float32).set_attn_implementation("sdpa")
