"""Split a document longer than the encoder's window into overlapping passages, by the model's tokenizer.

Each passage becomes a point of its own (MaxP, Dai and Callan 2019: a document scores as its best
passage), so a fact in the second half of a long document can be found at all; without splitting,
the encoder would never read past its window. A passage keeps the document's title (encoded as
`passage_text`, title then text), and its character span into the document's `text`, so a hit can say
where it matched.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.documents import Document, Passage


@dataclass(frozen=True)
class Window:
    """Passage length and the step between passage starts, in tokens of the document's text."""

    tokens: int
    stride: int

    def __post_init__(self) -> None:
        if self.tokens < 1 or not 1 <= self.stride <= self.tokens:
            raise ValueError(f"passage window {self.tokens} and stride {self.stride}: need 1 <= stride <= window")


TITLE_ROOM = 32  # tokens of the window left for the title, which every passage repeats


def window_for(encoder, tokens: int | None = None, stride: int | None = None) -> Window:
    """The settings' window, or by default the encoder's own: its max length less its template and room
    for a title; passages start every three quarters of a window (a quarter overlaps the next)."""
    if tokens is None:
        fixed = len(encoder.tokenize([""], "passage", False)[0][0])
        tokens = max(encoder.preset.max_length - fixed - TITLE_ROOM, 16)
    return Window(tokens, stride or max(tokens * 3 // 4, 1))


def split(doc: Document, tokenizer, window: Window) -> list[Passage]:
    """One passage for a document that fits the window; else windows of `window.tokens` tokens starting
    every `window.stride` tokens, the last one ending at the document's end."""
    offsets = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= window.tokens:
        return [Passage(doc, 0, 0, len(doc.text))]
    starts = list(range(0, len(offsets) - window.tokens, window.stride)) + [len(offsets) - window.tokens]
    passages = []
    for i, first in enumerate(starts):
        start = offsets[first][0] if first else 0
        last = first + window.tokens - 1
        end = offsets[last][1] if last < len(offsets) - 1 else len(doc.text)
        passages.append(Passage(Document(doc.doc_id, doc.text[start:end], doc.title, doc.metadata), i, start, end))
    return passages
