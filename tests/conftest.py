"""Session fixtures only; shared helpers (servers, requests, the DOCS corpus) live in helpers.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build, bundled_tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tokenizer")
    bundled_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def tiny_llama(tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Llama causal LM with the bundled tokenizer, usable as encoder and yes/no reranker."""
    return build(tmp_path_factory.mktemp("tiny-llama"), AutoTokenizer.from_pretrained(tokenizer_dir), "llama")
