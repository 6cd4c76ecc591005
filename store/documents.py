"""What a collection stores per document, and the one text the models read of it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Document:
    """One corpus record, as the indexer writes it and a search hit carries it back."""

    doc_id: str
    text: str
    title: str = ""
    metadata: dict = field(default_factory=dict)


def passage_text(doc: Document) -> str:
    """The text an encoder embeds and a reranker scores: RepLLaMA/Tevatron's title and text joined
    by one space, stripped. Indexing, search and training all read a document through this."""
    return f"{doc.title} {doc.text}".strip()
