"""(query, documents) -> one relevance score each, through the shared batcher.

Two kinds of score. A one-logit head (a trained score head, or an LM's yes-minus-no logits) reads the
pair's last state. A query-likelihood head (UPR, Sachan et al. 2022) reads the LM head at every query
token placed after the document and scores the mean log-probability of the query given the document:
zero-shot, it needs no trained head, and on the Debian set it is what lifts retrieval (RESULTS.md).
"""

from __future__ import annotations

import math
from concurrent.futures import Future

import anyio.to_thread
import torch

from models.batching import gather
from models.interfaces import RerankCost, Scored
from models.presets import RerankerPreset
from models.runtime import ModelRuntime
from models.templates import TemplateRenderer


class Pair(list):
    """One pair's token ids, carrying how many trailing tokens (the query) a likelihood head scores."""

    def __init__(self, ids: list[int], tail: int):
        super().__init__(ids)
        self.tail = tail


class Reranker(ModelRuntime):
    def __init__(self, model, preset: RerankerPreset, **batching):
        if model.head is None:
            raise ValueError("a reranker needs a model loaded with a score, yes/no or query-likelihood head")
        super().__init__(model, name=f"reranker-{preset.name}", **batching)
        self.preset = preset
        self._render = TemplateRenderer(model.tokenizer, preset.template, preset.max_length)
        self._likelihood = preset.head == "query_likelihood"
        if self._likelihood and preset.template[-1].strip() != "{query}":
            raise ValueError(f"preset {preset.name}: a query-likelihood template must end with the query segment")

    def tokenize(self, query: str, documents: list[str], truncate: bool) -> tuple[list[list[int]], list[int]]:
        """Each pair's token ids and how many of its tokens were cut."""
        rendered = [
            self._render.render({"query": query, "document": d}, truncate, label=f"documents[{i}]")
            for i, d in enumerate(documents)
        ]
        seqs = [Pair(r.ids, r.tail) if self._likelihood else r.ids for r in rendered]
        return seqs, [r.truncated for r in rendered]

    def submit(self, query: str, documents: list[str], truncate: bool = False) -> Future:
        """Future of `Scored`; raises InputTooLong or QueueFull before anything is queued."""
        seqs, truncated = self.tokenize(query, documents, truncate)
        lengths = [len(s) for s in seqs]
        return gather(self.batcher.submit(seqs), lambda scores: Scored(
            list(scores), sum(lengths), sum(truncated), self.relevance(scores), lengths, truncated))

    def estimate(self, query: str, documents: list[str], held: list[bool] | None = None) -> RerankCost | None:
        """What reranking each prefix of `documents` would take now, at the batcher's measured pace; a
        `held` document (cached) costs nothing. None before any batch has run."""
        batcher = self.batcher
        if not batcher.pace.batches:
            return None
        held = held or [False] * len(documents)
        seqs, _ = self.tokenize(query, [d for d, h in zip(documents, held, strict=True) if not h], True)
        lengths = iter(len(s) for s in seqs)
        tokens, prefix = 0, [0.0]
        for h in held:
            tokens += 0 if h else next(lengths)
            prefix.append(batcher.seconds_for(tokens))
        return RerankCost(batcher.seconds_for(batcher.pending_tokens), prefix)

    async def cost(self, query: str, documents: list[str], truncate: bool) -> RerankCost | None:
        """models.interfaces.PairScorer: `estimate` off the event loop (it tokenizes)."""
        return await anyio.to_thread.run_sync(self.estimate, query, documents)

    def relevance(self, scores: list[float]) -> list[float] | None:
        """Scores in [0, 1], as Cohere, Jina, TEI and vLLM clients expect: a score head's logit through a
        sigmoid (as TEI and vLLM serve it); yes/no and likelihood heads are probabilities already (None)."""
        if self.preset.activation != "none":
            return None
        return [1.0 / (1.0 + math.exp(-s)) if s >= 0 else math.exp(s) / (1.0 + math.exp(s)) for s in scores]

    def score(self, query: str, documents: list[str], truncate: bool = True) -> Scored:
        return self.submit(query, documents, truncate).result()

    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored:
        """models.interfaces.PairScorer: tokenizes off the event loop, then awaits the batch."""
        return await self.join(query, documents, truncate)

    @torch.inference_mode()
    def _run(self, seqs: list[list[int]]) -> list[float]:
        if self._likelihood:
            k = max(s.tail for s in seqs) + 1  # the state before each query token predicts it
            scores = query_logprob(self.last_states(seqs, k), seqs, self.model.head)
        else:
            scores = self.model.head(self.pooled_states(seqs, 1)).float()[:, 0]
        if self.preset.activation == "sigmoid":
            scores = torch.sigmoid(scores)
        elif self.preset.activation == "exp":
            scores = torch.exp(scores)
        return scores.cpu().tolist()


def query_logprob(states: torch.Tensor, seqs: list[Pair], lm_head, rows_per_chunk: int = 512) -> torch.Tensor:
    """[B] mean log P(query token | document, earlier query tokens), from states [B, k, H] at each pair's
    last k positions. Only the query positions go through the LM head, in chunks, so no [tokens, vocab]
    matrix is held for a whole batch. Differentiable: `reprank train reranker` uses it."""
    states = states[:, :-1]  # the last state predicts nothing
    width = states.shape[1]
    tails = torch.tensor([s.tail for s in seqs], device=states.device)
    real = torch.arange(width, device=states.device)[None, :] >= (width - tails)[:, None]
    targets = torch.tensor([t for s in seqs for t in s[len(s) - s.tail:]], device=states.device)
    picked = states[real]  # [sum of tails, H], row-major: pair by pair, query token by token
    logp = torch.cat([
        lm_head(chunk).float().log_softmax(-1).gather(1, target[:, None])[:, 0]
        for chunk, target in zip(picked.split(rows_per_chunk), targets.split(rows_per_chunk), strict=True)
    ])
    owner = torch.repeat_interleave(torch.arange(len(seqs), device=states.device), tails)
    return torch.zeros(len(seqs), device=states.device).index_add(0, owner, logp) / tails.clamp(min=1)
