"""Exceptions -> HTTP responses, in one place. Body: {"error": {"type", "message", ...}}."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mimiverse.api.deps import ClientDisconnected
from mimiverse.errors import (
    AllBackendsFailed,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    MimiverseError,
    RequestError,
)

log = logging.getLogger("mimiverse.api")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # backends / backend name on 5xx answers

    type: str
    message: str


class ErrorBody(BaseModel):
    """Every error of our own API: {"error": {"type", "message", ...}}."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "the body could not be read", 401: "no or wrong API token",
    403: "refused (e.g. a path outside the allowed roots)", 404: "not found",
    409: "not ready (e.g. nothing indexed yet)", 413: "the body is over the size limit",
    421: "unknown Host", 429: "over the rate or concurrency limit (see Retry-After)",
    431: "the request line and headers are over the size limit",
    422: "a field is outside what is allowed", 502: "the backend failed",
    503: "no backend could answer", 504: "the backend timed out",
}
# What every route of our API may answer besides its success: bad bodies and what the
# server and middleware answer before a route runs, in the same shape (421/403/401, the
# size limits 413/431, admission 429).
COMMON_ERRORS = (400, 401, 403, 413, 421, 422, 429, 431)
BACKEND_ERRORS = (502, 503, 504)


def error_responses(*codes: int, model: type[BaseModel] = ErrorBody) -> dict[int | str, Any]:
    """`responses=` for a router or route: these statuses answer `model` as JSON."""
    return {code: {"model": model, "description": _DESCRIPTIONS.get(code, "error")}
            for code in codes}


def status_for(exc: MimiverseError) -> int:
    if isinstance(exc, RequestError):
        return exc.status_code
    if isinstance(exc, AllBackendsFailed):
        # How they failed, when they all failed alike: timed out, or answered nonsense.
        if exc.all_failed_by(BackendTimeout):
            return 504
        if exc.all_failed_by(BackendProtocolError):
            return 502
        return 503
    if isinstance(exc, BackendTimeout):
        return 504
    if isinstance(exc, BackendError):
        return 502
    return 500


def error_type(exc: BaseException) -> str:
    """snake_case of the class name: AllBackendsFailed -> all_backends_failed."""
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def error_body(exc: MimiverseError) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error_type(exc), "message": str(exc)}
    if isinstance(exc, AllBackendsFailed):
        body["backends"] = [{"name": n, "reason": why} for n, why in exc.failures]
    elif isinstance(exc, BackendError) and exc.backend:
        body["backend"] = exc.backend
    return {"error": body}


def error_type_for_status(status: int) -> str:
    """not_found, method_not_allowed, ...: the status's reason phrase in snake_case."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def on_mimiverse_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MimiverseError)
        status = status_for(exc)
        if status >= 500:
            # Which backends failed, and how; their own words (which might echo a prompt)
            # only at debug level.
            backends = exc.backend if isinstance(exc, BackendError) else ""
            if isinstance(exc, AllBackendsFailed):
                backends = ", ".join(name for name, _ in exc.failures)
            log.warning("%s %s answered %d %s (backends: %s)", request.method,
                        request.url.path, status, error_type(exc), backends or "none")
            log.debug("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body(exc), status_code=status)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        body = {"error": {"type": "invalid_request", "message": describe_validation(exc)}}
        return JSONResponse(body, status_code=422)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        # FastAPI's own 404/405/400 answers, in our shape like every other error.
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            message = ("request body could not be read as JSON: it must be UTF-8 and "
                       "nested at most a few hundred levels deep")
        body = {"error": {"type": error_type_for_status(exc.status_code), "message": message}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # Nobody is listening; 499 (nginx's "client closed request") for the access log.
        return Response(status_code=499)

    async def on_body_cut_off(request: Request, exc: Exception) -> Response:
        # The client left while sending its body: its doing, not an error of ours.
        log.info("%s %s: the client disconnected before its body was complete",
                 request.method, request.url.path)
        return Response(status_code=499)

    app.add_exception_handler(MimiverseError, on_mimiverse_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ClientDisconnected, on_disconnect)
    app.add_exception_handler(ClientDisconnect, on_body_cut_off)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
