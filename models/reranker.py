"""(query, documents) -> one relevance score each, through the shared batcher."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import torch

from models.batching import gather
from models.presets import RerankerPreset
from models.runtime import ModelRuntime
from models.templates import TemplateRenderer


@dataclass
class Scored:
    scores: list[float]
    tokens: int
    truncated_tokens: int


class Reranker(ModelRuntime):
    def __init__(self, model, preset: RerankerPreset, **batching):
        if model.head is None:
            raise ValueError("a reranker needs a model loaded with a score or yes/no head")
        super().__init__(model, name=f"reranker-{preset.name}", **batching)
        self.preset = preset
        self._render = TemplateRenderer(model.tokenizer, preset.template, preset.max_length)

    def tokenize(self, query: str, documents: list[str], truncate: bool) -> tuple[list[list[int]], int]:
        rendered = [
            self._render.render({"query": query, "document": d}, truncate, label=f"documents[{i}]")
            for i, d in enumerate(documents)
        ]
        return [r.ids for r in rendered], sum(r.truncated for r in rendered)

    def submit(self, query: str, documents: list[str], truncate: bool = False) -> Future:
        """Future of `Scored`; raises InputTooLong or QueueFull before anything is queued."""
        seqs, truncated = self.tokenize(query, documents, truncate)
        tokens = sum(len(s) for s in seqs)
        return gather(self.batcher.submit(seqs), lambda scores: Scored(list(scores), tokens, truncated))

    def score(self, query: str, documents: list[str], truncate: bool = True) -> Scored:
        return self.submit(query, documents, truncate).result()

    def _run(self, seqs: list[list[int]]) -> list[float]:
        last = self.pooled_states(seqs, 1)
        with torch.inference_mode():
            logits = self.model.head(last).float()[:, 0]
        if self.preset.activation == "sigmoid":
            logits = torch.sigmoid(logits)
        return logits.cpu().tolist()
