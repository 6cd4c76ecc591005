"""API keys, the request body limit, and the no-telemetry guarantee.

Keys come from `REPRANK_API_KEYS` (comma-separated) and/or `REPRANK_API_KEYS_FILE` (one per line, `#`
comments; a line `sha256:<hex>` is a digest, so the plaintext need not live on the server). Only their
SHA-256 digests are kept. When any key is configured, every route except the public ones needs one,
sent as `Authorization: Bearer <key>` (what the OpenAI and Cohere clients send) or as an `api-key` /
`x-api-key` header. A refusal is a 401 in the project's error body that never echoes what was sent.

`LimitBody` answers 413 before parsing: at once for a Content-Length over the limit, and as soon as
the bytes of a chunked body pass it (FastAPI's own limiter would answer in plain text, not our body).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PREFIXES = ("/docs-assets/",)  # the API reference's own scripts and styles (service/docs.py)
KEY_HEADERS = (b"api-key", b"x-api-key")

# Set before any Hugging Face library reads its configuration: models load from local disk only,
# and nothing reports usage anywhere.
NO_TELEMETRY = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "DO_NOT_TRACK": "1",
                "QDRANT__TELEMETRY_DISABLED": "true", "GRADIO_ANALYTICS_ENABLED": "False",
                "FASTAPI_OTEL_AUTO_CONFIGURE": "false", "OTEL_SDK_DISABLED": "true"}


def disable_telemetry() -> None:
    os.environ.update(NO_TELEMETRY)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_digests(keys: str | None, keys_file: Path | None) -> frozenset[str]:
    """SHA-256 digests of the configured keys; empty when none are (the API is then open)."""
    entries = [k for k in (keys or "").split(",")]
    if keys_file is not None:
        entries += [line.split("#", 1)[0] for line in Path(keys_file).read_text().splitlines()]
    digests = set()
    for entry in (e.strip() for e in entries):
        if entry.startswith("sha256:"):
            digests.add(entry.removeprefix("sha256:").lower())
        elif entry:
            digests.add(digest(entry))
    return frozenset(digests)


def presented_key(scope: Scope) -> str | None:
    headers = dict(scope.get("headers", ()))
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name in KEY_HEADERS:
        if headers.get(name):
            return headers[name].decode("latin-1").strip()
    return None


class RequireApiKey:
    """ASGI middleware: 401 unless a configured key is presented (checked before the body is read)."""

    def __init__(self, app: ASGIApp, digests: frozenset[str]):
        self.app, self.digests = app, digests

    def allowed(self, key: str | None) -> bool:
        if key is None:
            return False
        d = digest(key)
        return any(hmac.compare_digest(d, known) for known in self.digests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC or path.startswith(PUBLIC_PREFIXES) or self.allowed(
                presented_key(scope)):
            await self.app(scope, receive, send)
            return
        message = "a valid API key is required: send 'Authorization: Bearer <key>' (or an 'x-api-key' header)"
        await error_response(401, message, "unauthorized", {"WWW-Authenticate": "Bearer"}, scope["path"])(scope, receive, send)


class LimitBody:
    """ASGI middleware: 413 in the project's error body for request bodies over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is over the limit of {self.max_bytes} bytes"
        length = dict(scope.get("headers", ())).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await error_response(413, message, "too_large", path=scope["path"])(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:  # raised inside the route's body read: our 413 handler answers
                raise HTTPException(413, message)
            return msg

        await self.app(scope, counted, send)
