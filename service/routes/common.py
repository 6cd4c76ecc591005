"""What every API family's routes share: the ready pipeline, and the documented error statuses."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import Request

from service.errors import ApiError
from service.pipeline import Pipeline
from service.schemas import error_responses

MODEL_ERRORS = error_responses(400, 401, 404, 413, 422, 429, 503, 504)


def pipeline(request: Request) -> Pipeline:
    state = request.app.state
    if not state.ready:
        reason = f"model loading failed: {state.load_error}" if state.load_error else "models are still loading"
        raise ApiError(503, f"not ready: {reason}", "unavailable", {"Retry-After": "5"})
    return state.pipeline


def as_floats(vectors: np.ndarray) -> list[list[float]]:
    return [v.astype(np.float32).tolist() for v in vectors]


def as_base64(vectors: np.ndarray) -> list[str]:
    """Each vector's little-endian float32 bytes, base64: the OpenAI and Cohere encoding alike."""
    return [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]


def best_first(scores: list[float], top_n: int | None) -> list[int]:
    """Document indexes by score, best first (ties in input order), the first top_n of them."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: top_n or len(scores)]


def check_dimensions(requested: int | None, served: int | None) -> None:
    """A smaller vector than the model's cannot be served honestly (no preset here is Matryoshka-trained)."""
    if requested is not None and requested != served:
        raise ApiError(400, f"dimensions {requested} cannot be served: this encoder's vectors have {served} "
                       "dimensions and are not trained for truncation; omit the field or pass "
                       f"{served}", "invalid_request")
