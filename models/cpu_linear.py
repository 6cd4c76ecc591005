"""Linear layers whose weights are packed once for the CPU's bf16 GEMM kernel (oneDNN).

Why: `nn.Linear` hands oneDNN the plain weight on every call, and oneDNN re-blocks it first. For a
query's few rows that reorder costs about as much as the product itself: the 210 linears of
SmolLM2-135M on 26 rows take 32 ms in bf16 through `nn.Linear` and 21 ms packed (2-core AMD EPYC,
avx512_bf16; benchmarks/RESULTS.md). The packed product is the same oneDNN kernel, so the outputs are
the same. Inference only: a packed weight has no gradient, so training keeps `nn.Linear`.
"""

from __future__ import annotations

import torch
from torch import nn


def bf16_kernels() -> bool:
    """oneDNN is built in and runs bf16 on this CPU (else torch's own fallback is used)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packable(linear: nn.Module) -> bool:
    w = getattr(linear, "weight", None)
    return (type(linear) is nn.Linear and w is not None and w.device.type == "cpu" and w.dtype == torch.bfloat16
            and bf16_kernels())


class PackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's blocked layout (any batch shape in, as nn.Linear)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1),
                                 persistent=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def pack_linears(module: nn.Module) -> int:
    """Swap every bf16 CPU `nn.Linear` under `module` for a PackedLinear; returns how many."""
    swaps = [(parent, name, child) for parent in module.modules()
             for name, child in parent.named_children() if packable(child)]
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child))
    return len(swaps)
