"""Texts -> L2-normalised vectors, query or passage side, through the shared batcher."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import torch

from models.batching import gather
from models.interfaces import Encoded, Side
from models.presets import EncoderPreset
from models.runtime import ModelRuntime
from models.templates import TemplateRenderer


class Encoder(ModelRuntime):
    def __init__(self, model, preset: EncoderPreset, **batching):
        super().__init__(model, name=f"encoder-{preset.name}", **batching)
        self.preset = preset
        self.dim = model.dim
        max_len = preset.max_length
        self._render = {
            "query": TemplateRenderer(model.tokenizer, preset.query_template, max_len),
            "passage": TemplateRenderer(model.tokenizer, preset.passage_template, max_len),
        }

    def tokenize(self, texts: list[str], side: Side, truncate: bool) -> tuple[list[list[int]], list[int]]:
        """Each text's token ids and how many of its tokens were cut."""
        rendered = [
            self._render[side].render({"text": t}, truncate, label=f"input[{i}]") for i, t in enumerate(texts)
        ]
        return [r.ids for r in rendered], [r.truncated for r in rendered]

    def submit(self, texts: list[str], side: Side = "passage", truncate: bool = False) -> Future:
        """Future of `Encoded`; raises InputTooLong or QueueFull before anything is queued."""
        seqs, truncated = self.tokenize(texts, side, truncate)
        lengths = [len(s) for s in seqs]
        return gather(
            self.batcher.submit(seqs),
            lambda rows: Encoded(np.stack(rows) if rows else np.zeros((0, self.dim), np.float32), sum(lengths),
                                 sum(truncated), lengths, truncated),
        )

    def encode(self, texts: list[str], side: Side = "passage", truncate: bool = True) -> Encoded:
        return self.submit(texts, side, truncate).result()

    async def embed(self, texts: list[str], side: Side, truncate: bool) -> Encoded:
        """models.interfaces.TextEncoder: tokenizes off the event loop, then awaits the batch."""
        return await self.join(texts, side, truncate)

    def _run(self, seqs: list[list[int]]) -> list[np.ndarray]:
        pooled = self.pooled_states(seqs, self.preset.pool_last).float()
        if self.preset.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return list(pooled.cpu().numpy())
