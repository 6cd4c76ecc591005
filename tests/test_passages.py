"""Long documents are split into overlapping token windows whose spans cover the whole text."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from indexer.passages import Window, split
from store.documents import Document


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_a_short_document_is_one_passage(tok):
    doc = Document("d", "compress files with zstd", "zstd", {"k": 1})
    (p,) = split(doc, tok, Window(64, 48))
    assert (p.index, p.start, p.end, p.doc) == (0, 0, len(doc.text), doc)


def test_a_long_document_is_covered_by_overlapping_windows(tok):
    words = [f"w{i}" for i in range(700)]
    doc = Document("long", " ".join(words), "a title", {"k": 1})
    window = Window(100, 80)
    passages = split(doc, tok, window)
    assert [p.index for p in passages] == list(range(len(passages)))
    assert passages[0].start == 0 and passages[-1].end == len(doc.text)
    for p in passages:
        assert p.doc.text == doc.text[p.start:p.end]
        assert (p.doc.doc_id, p.doc.title, p.doc.metadata) == ("long", "a title", {"k": 1})
        assert len(tok(p.doc.text, add_special_tokens=False)["input_ids"]) <= window.tokens + 1
    for a, b in zip(passages, passages[1:], strict=False):
        assert b.start < a.end, "consecutive passages overlap"
    assert "w699" in passages[-1].doc.text and "w0 " in passages[0].doc.text


def test_window_settings_are_checked():
    with pytest.raises(ValueError):
        Window(10, 11)
    with pytest.raises(ValueError):
        Window(0, 0)
