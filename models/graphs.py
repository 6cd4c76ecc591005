"""CUDA graphs for small batches (a query, a few queries): one captured packed forward per token bucket.

A 16-token query is launch-bound on a GPU: a 32-layer model issues several hundred kernels whose
launches cost more than their math. Replaying a captured graph issues them all at once. A graph
needs static shapes and addresses, so a batch is laid out in a fixed frame of `tokens` positions
and `slots` sequence slots: the sequences first, unused slots empty (zero length), and the rest of
the row one filler sequence whose states are never read. The varlen kernel is given the bucket as
its max length (an upper bound is all it needs). The frame layout is plain tensor code, tested on
CPU; the capture itself runs only on CUDA.
"""

from __future__ import annotations

import torch

from models.packed import layout, packed_forward, pool_packed

BUCKETS = (32, 64, 128, 256)
SLOTS = 16


def frame(seqs: list[list[int]], tokens: int, slots: int, pad_id: int) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, position_ids, cu_seqlens) of `seqs` laid out in a frame of `tokens` x `slots` + 1 filler."""
    total = sum(len(s) for s in seqs)
    if len(seqs) > slots or total > tokens:
        raise ValueError(f"{len(seqs)} sequences of {total} tokens do not fit a {slots}-slot, {tokens}-token frame")
    return layout([*seqs, *[[]] * (slots - len(seqs)), [pad_id] * (tokens - total)])


class GraphedBackbone:
    """Packed forwards of small batches replayed from CUDA graphs, captured lazily per token bucket."""

    def __init__(self, backbone: torch.nn.Module, pad_id: int, buckets=BUCKETS, slots: int = SLOTS):
        self.backbone, self.pad_id, self.buckets, self.slots = backbone, pad_id, tuple(sorted(buckets)), slots
        self.device = next(backbone.parameters()).device
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def bucket(self, seqs: list[list[int]]) -> int | None:
        """The smallest bucket the batch fits, or None (then the caller runs it eagerly)."""
        total = sum(len(s) for s in seqs)
        if len(seqs) > self.slots:
            return None
        return next((b for b in self.buckets if total <= b), None)

    @torch.inference_mode()
    def pooled(self, seqs: list[list[int]], k: int) -> torch.Tensor:
        """[n, H] pooled final states (models.packed.pool_packed) from the bucket's replayed graph."""
        tokens = self.bucket(seqs)
        if tokens is None:
            raise ValueError("batch too large for a graph bucket")
        graph, inputs, out = self._graphs.get(tokens) or self._capture(tokens)
        for buf, values in zip(inputs, frame(seqs, tokens, self.slots, self.pad_id), strict=True):
            buf.copy_(torch.tensor(values, dtype=buf.dtype).view_as(buf), non_blocking=True)
        graph.replay()
        return pool_packed(out, [len(s) for s in seqs], k)  # new tensors: the graph's output buffer is reused

    def _capture(self, tokens: int):
        ids, positions, cu = frame([[self.pad_id]], tokens, self.slots, self.pad_id)
        inputs = [torch.tensor(ids, device=self.device)[None], torch.tensor(positions, device=self.device)[None],
                  torch.tensor(cu, dtype=torch.int32, device=self.device)]

        def run():
            return packed_forward(self.backbone, inputs[0], inputs[1], inputs[2], tokens)

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm up kernels and allocator outside the capture
            for _ in range(2):
                run()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the reranker's worker may launch kernels on the same GPU while this captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = run()
        self._graphs[tokens] = (graph, inputs, out)
        return self._graphs[tokens]
