"""bf16 linears packed once for oneDNN (models.cpu_linear) compute what nn.Linear computes."""

from __future__ import annotations

import pytest
import torch
from tiny import build
from transformers import AutoTokenizer

from models.cpu_linear import PackedLinear, bf16_kernels, pack_linears
from models.encoder import Encoder
from models.loading import load
from models.presets import ENCODERS

pytestmark = pytest.mark.skipif(not bf16_kernels(), reason="oneDNN runs no bf16 on this CPU")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, tokenizer_dir):
    return build(tmp_path_factory.mktemp("llama"), AutoTokenizer.from_pretrained(tokenizer_dir))


def test_packed_backbone_gives_the_same_states(tiny_llama):
    model = load(str(tiny_llama), "none", dtype=torch.bfloat16)
    ids = torch.tensor([[5, 17, 301, 42, 9, 2], [7, 8, 9, 2, 2, 2]])
    mask = (ids != 2).long()
    mask[:, -1] = 1
    with torch.inference_mode():
        before = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        assert pack_linears(model.backbone) == 7 * 2  # q, k, v, o, gate, up, down in each of 2 layers
        after = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    assert isinstance(model.backbone.layers[1].self_attn.o_proj, PackedLinear)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-2)  # the same oneDNN product: bf16 rounding at most


def test_the_cpu_runtime_packs_bf16_and_leaves_fp32_alone(tiny_llama):
    preset = ENCODERS["smollm2"]
    vectors = {}
    for dtype in (torch.float32, torch.bfloat16):
        with Encoder(load(str(tiny_llama), "none", dtype=dtype), preset) as enc:
            packed = sum(isinstance(m, PackedLinear) for m in enc.model.backbone.modules())
            assert packed == (14 if dtype == torch.bfloat16 else 0)
            vectors[dtype] = enc.encode(["compress files with zstd", "a longer text about archives"]).vectors
    assert (vectors[torch.float32] * vectors[torch.bfloat16]).sum(1).min() > 0.99
