"""One error body everywhere: {"error": {"message", "type", "code"}}, with the documented statuses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import InputTooLong, QueueFull
from store import CollectionNotFound, StoreLocked, StoreMismatch, StoreUnavailable

log = logging.getLogger("reprank")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.headers = status, message, type_, headers


def body(status: int, message: str, type_: str) -> dict:
    return {"error": {"message": message, "type": type_, "code": status}}


def error_response(status: int, message: str, type_: str, headers: dict | None = None) -> JSONResponse:
    """The one error body as a response: for handlers, routes and the ASGI middlewares alike."""
    return JSONResponse(body(status, message, type_), status, headers=headers)


def as_api_error(exc: Exception) -> ApiError | None:
    """The documented status for an error raised below the routes, or None for a bug (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputTooLong):
        return ApiError(413, str(exc), "input_too_long")
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
    async def _invalid(_req: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return error_response(422, "; ".join(parts) or "invalid request", "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):
        kind = _STATUS_TYPES.get(exc.status_code, "error")
        return error_response(exc.status_code, str(exc.detail), kind, exc.headers)

    async def _known(_req: Request, exc: Exception):
        err = as_api_error(exc)
        return error_response(err.status, err.message, err.type, err.headers)

    for cls in (ApiError, InputTooLong, QueueFull, CollectionNotFound, StoreMismatch, StoreUnavailable, StoreLocked):
        app.add_exception_handler(cls, _known)

    @app.exception_handler(Exception)
    async def _bug(_req: Request, exc: Exception):
        log.error("internal error", exc_info=exc)
        return error_response(500, "internal error", "internal_error")
