"""What the encoder and the reranker share: a loaded model, a batcher, and a padded forward pass.

On CUDA a batch runs packed (models.packed: one row, no pad tokens, varlen attention). On CPU it is
right-padded with an attention mask: the batcher's length-sorted token-budget batches leave little
padding, and the packed layout measured no faster there (benchmarks/cpu_bench.py); in bf16 its linear
weights are packed once for oneDNN (models.cpu_linear). Either way states
are read at each sequence's own last real positions (from the sequence lengths, never from
`input_ids != pad`, because the pad id may be the EOS we appended), so a text gives the same state
alone or in any batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import anyio.to_thread
import torch

from models.batching import BatchStats, TokenBatcher
from models.cpu_linear import pack_linears
from models.graphs import GraphedBackbone
from models.loading import LoadedModel
from models.packed import ATTENTION, last_packed, packed_hidden, packed_pooled, register


def pad_right(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, lengths) of a right-padded batch."""
    lengths = torch.tensor([len(s) for s in seqs], device=device)
    width = int(lengths.max())
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
    return ids, mask, lengths


def gather_last(hidden: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """hidden [B, T, H] at each row's last k real positions -> [B, k, H] (differentiable: training uses it).
    A row shorter than k repeats its first state at the front (a multi-position head masks those)."""
    pos = (lengths[:, None] - k + torch.arange(k, device=hidden.device)[None, :]).clamp(min=0)
    return hidden.gather(1, pos[:, :, None].expand(-1, -1, hidden.shape[-1]))


def pool(hidden: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """Right-padded hidden [B, T, H] -> [B, H]: the mean of each row's last k real states, or of all of
    them when k == 0 (mean pooling). Differentiable: training pools with it too."""
    if k:
        return gather_last(hidden, lengths, k).mean(dim=1)
    mask = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]).to(hidden.dtype)
    return (hidden * mask[..., None]).sum(1) / lengths[:, None].to(hidden.dtype)


class ModelRuntime:
    pads = True  # a batch costs its padded size (dense forward); an engine that packs sets False

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
        max_queue_tokens: int = 1_000_000,
        deadline_admission: bool = True,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "model",
        packed: bool | None = None,
        cuda_graphs: bool | None = None,
    ):
        self.model = model
        cuda = model.device.type == "cuda"
        self.packed = cuda if packed is None else packed
        if self.packed:
            register()
            model.backbone.set_attn_implementation(ATTENTION)
        elif model.backbone is not None:  # a bf16 CPU forward: weights packed once for oneDNN
            pack_linears(model.backbone)
        self.tokenizer = model.tokenizer
        pad = model.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (model.tokenizer.eos_token_id or 0)
        use_graphs = self.packed and cuda if cuda_graphs is None else cuda_graphs
        self.graphs = GraphedBackbone(model.backbone, self.pad_id) if use_graphs else None
        self.batcher = TokenBatcher(
            self._run,
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
            max_queue_tokens=max_queue_tokens,
            deadline_admission=deadline_admission,
            on_batch=on_batch,
            name=name,
            padded=not self.packed and self.pads,
        )

    def _run(self, seqs: list[list[int]]) -> Sequence[Any]:
        raise NotImplementedError

    @torch.inference_mode()
    def pooled_states(self, seqs: list[list[int]], k: int) -> torch.Tensor:
        """[B, H]: the mean final-layer state of each sequence's last `k` tokens (k == 0: all of them)."""
        if self.graphs is not None and self.graphs.bucket(seqs) is not None:
            return self.graphs.pooled(seqs, k)  # small batches: a replayed CUDA graph
        if self.packed:
            return packed_pooled(self.model.backbone, seqs, k)
        ids, mask, lengths = pad_right(seqs, self.pad_id, self.model.device)
        hidden = self.model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        return pool(hidden, lengths, k)

    @torch.inference_mode()
    def last_states(self, seqs: list[list[int]], k: int) -> torch.Tensor:
        """[B, k, H]: final-layer states at each sequence's last k positions, for a head that reads
        several positions (query likelihood). Rows shorter than k repeat their first state at the front;
        the caller masks those. Packed on CUDA; never a graph (its batches are rerank-sized)."""
        if self.packed:
            return last_packed(packed_hidden(self.model.backbone, seqs), [len(s) for s in seqs], k)
        ids, mask, lengths = pad_right(seqs, self.pad_id, self.model.device)
        return gather_last(self.model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state, lengths, k)

    def submit(self, *args) -> Future:
        raise NotImplementedError

    async def join(self, *args):
        """submit() in a worker thread (tokenizing a rerank takes milliseconds), then await its batch.
        anyio's thread pool is the one the service's routes use (40 threads), not asyncio's small default.
        Cancelled (a deadline, a budget, a client gone), its sequences are dropped before they run."""
        submitted: list[Future] = []

        def submit() -> Future:
            submitted.append(self.submit(*args))
            return submitted[0]

        try:
            future = await anyio.to_thread.run_sync(submit)
        except asyncio.CancelledError:  # cancelled while tokenizing: drop what was queued meanwhile
            for f in submitted:
                f.cancel()
            raise
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.batcher.close()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
