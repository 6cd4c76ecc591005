"""One error body everywhere: {"error": {"message", "type", "code"}}, with the documented statuses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import DeadlineTooShort, InputTooLong, QueueFull
from store import CollectionNotFound, StoreLocked, StoreMismatch, StoreUnavailable

log = logging.getLogger("reprank")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.headers = status, message, type_, headers


def body(status: int, message: str, type_: str) -> dict:
    return {"error": {"message": message, "type": type_, "code": status}}


# TEI clients read TEI's own error body on TEI's paths (service/routes/tei.py)
TEI_PATHS = frozenset({"/", "/embed", "/rerank", "/predict", "/info", "/health"})
_TEI_TYPES = {429: "Overloaded", 503: "Unhealthy", 504: "Backend", 500: "Backend"}


def tei_body(status: int, message: str) -> dict:
    return {"error": message, "error_type": _TEI_TYPES.get(status, "Validation")}


def error_response(status: int, message: str, type_: str, headers: dict | None = None,
                   path: str | None = None) -> JSONResponse:
    """The one error body as a response, for handlers, routes and the ASGI middlewares alike; on a TEI
    path (`path`: the request's), TEI's {"error", "error_type"} with the same status and message."""
    content = tei_body(status, message) if path in TEI_PATHS else body(status, message, type_)
    return JSONResponse(content, status, headers=headers)


NO_RETRY = {"x-should-retry": "false"}  # the openai client's header: the same request again fails the same way


def as_api_error(exc: Exception) -> ApiError | None:
    """The documented status for an error raised below the routes, or None for a bug (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputTooLong):
        return ApiError(413, str(exc), "input_too_long")
    if isinstance(exc, DeadlineTooShort):
        return ApiError(413, str(exc), "too_large", NO_RETRY)
    if isinstance(exc, QueueFull):
        return ApiError(429, str(exc), "overloaded", {"Retry-After": str(max(1, round(exc.retry_after)))})
    if isinstance(exc, CollectionNotFound):
        return ApiError(404, str(exc), "not_found")
    if isinstance(exc, StoreMismatch):
        return ApiError(409, str(exc), "conflict")
    if isinstance(exc, (StoreUnavailable, StoreLocked)):
        return ApiError(503, str(exc), "unavailable", {"Retry-After": "5"})
    return None


_STATUS_TYPES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                 413: "too_large", 422: "invalid_request", 429: "overloaded", 503: "unavailable", 504: "timeout"}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(req: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return error_response(422, "; ".join(parts) or "invalid request", "invalid_request", path=req.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException):
        kind = _STATUS_TYPES.get(exc.status_code, "error")
        return error_response(exc.status_code, str(exc.detail), kind, exc.headers, req.url.path)

    async def _known(req: Request, exc: Exception):
        err = as_api_error(exc)
        return error_response(err.status, err.message, err.type, err.headers, req.url.path)

    for cls in (ApiError, InputTooLong, DeadlineTooShort, QueueFull, CollectionNotFound, StoreMismatch, StoreUnavailable,
                StoreLocked):
        app.add_exception_handler(cls, _known)

    @app.exception_handler(Exception)
    async def _bug(req: Request, exc: Exception):
        log.error("internal error", exc_info=exc)
        return error_response(500, "internal error", "internal_error", path=req.url.path)
