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


@dataclass(frozen=True)
class Passage:
    """A stored unit: a whole document (index 0 of 1), or one window of a long one (indexer.passages).
    Its `doc` carries the passage's text with the document's id, title and metadata; `start`/`end` are
    its character span in the document's text."""

    doc: Document
    index: int = 0
    start: int = 0
    end: int | None = None  # None: the end of the text

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.start + len(self.doc.text) if self.end is None else self.end


def whole(item: Document | Passage) -> Passage:
    """A Document is its own single passage."""
    return item if isinstance(item, Passage) else Passage(item)
