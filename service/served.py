"""The models a process serves, behind one interface whether they run here or on worker replicas.

`ServedModel` is a models.interfaces TextEncoder (task "embedding") or PairScorer (task "rerank") that
also names itself for /v1/models. service/local.py runs one in this process; service/remote.py
reaches one on reprank workers or stock vLLM servers. `open_models` picks by the process's role.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from models.interfaces import Encoded, Scored, Side
from service.metrics import Metrics
from service.schemas import ModelCard
from service.settings import Settings
from store.documents import Document, Passage

Task = Literal["embedding", "rerank"]


class ServedModel(Protocol):
    task: Task
    model_id: str  # the id responses name
    names: set[str]  # every `model` value a request may give for it

    def card(self) -> ModelCard: ...
    async def embed(self, texts: list[str], side: Side, truncate: bool) -> Encoded: ...
    async def rerank(self, query: str, documents: list[str], truncate: bool) -> Scored: ...
    def passages(self, doc: Document, settings: Settings) -> list[Passage]:
        """An encoder's split of a document for storing (one passage where it cannot split)."""
    async def aclose(self) -> None: ...


def served_names(model_arg: str, preset: str) -> set[str]:
    """A served model answers to its --model value, its folder name and its preset name."""
    return {model_arg, model_arg.rstrip("/").split("/")[-1], preset}


async def open_models(settings: Settings, metrics: Metrics) -> tuple[ServedModel | None, ServedModel | None]:
    """(encoder, reranker) for the process's role: local models, or remote workers for a gateway."""
    if settings.role != "gateway":
        from service.local import load_local

        return await asyncio.to_thread(load_local, settings, metrics)
    from service.remote import RemoteModel

    if not settings.encoder_urls:
        raise ValueError("--role gateway needs --encoder-url (env REPRANK_ENCODER_URLS)")
    encoder = RemoteModel("embedding", settings.encoder_urls, settings, metrics)
    reranker = RemoteModel("rerank", settings.reranker_urls, settings, metrics) if settings.reranker_urls else None
    await asyncio.gather(*(m.start() for m in (encoder, reranker) if m))
    return encoder, reranker
