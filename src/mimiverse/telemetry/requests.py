"""Every HTTP request, once its response ends (a stream when its last byte is sent):
counted in the metrics and written as one JSON line to the `mimiverse.access` log, under
a request id the client gets back in `X-Request-Id` (its own, when it sent a sane one).

The access line holds the path (cut at 256 characters) and the route template that
matched it, never the query string, a header, the body or a token: a request is known by
its id, its token by the token's short id and team.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from contextvars import ContextVar

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mimiverse.security import PRINCIPAL_SCOPE_KEY, Principal
from mimiverse.telemetry.metrics import METHODS, OTHER, Metrics

access_log = logging.getLogger("mimiverse.access")
# For log lines written while a request runs (e.g. a backend's failure).
current_request_id: ContextVar[str] = ContextVar("mimiverse_request_id", default="-")
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")


# Ids made here: this process's random prefix and a counter (unique across replicas
# without a system call per request). A forked worker (`serve --workers`) draws its own.
_ID_PREFIX = ""
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(4).hex()
    _id_counter = itertools.count(1)


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def _request_id(scope: Scope) -> bytes:
    for key, value in scope["headers"]:
        if key == b"x-request-id" and SANE_REQUEST_ID.fullmatch(value):
            return bytes(value)
    return f"{_ID_PREFIX}{next(_id_counter):08x}".encode()


class RequestTelemetry:
    """Outermost ASGI middleware: it sees every answer, the gate's 401/421 included."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = 500  # what the client gets if the app raises before answering
        sent = 0

        async def send_observed(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id)]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        reset = current_request_id.set(request_id.decode())
        try:
            await self.app(scope, receive, send_observed)
        finally:
            current_request_id.reset(reset)
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None)
            route = route if isinstance(route, str) else OTHER
            method = scope["method"] if scope["method"] in METHODS else OTHER
            self.metrics.http_request(route, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(_access_line(scope, request_id, route, method, status,
                                             seconds, sent))


def _access_line(scope: Scope, request_id: bytes, route: str, method: str, status: int,
                 seconds: float, sent: int) -> str:
    principal: Principal | None = scope.get(PRINCIPAL_SCOPE_KEY)
    received = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
    client = scope.get("client")
    return orjson.dumps({
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "id": request_id.decode(),
        "method": method,
        "path": scope["path"][:256],
        "route": route,
        "status": status,
        "ms": round(seconds * 1000, 2),
        "bytes_in": int(received) if received.isdigit() else None,
        "bytes_out": sent,
        "client": client[0] if client else None,
        "token": principal.token_id if principal else None,
        "team": principal.team if principal else None,
    }).decode()
