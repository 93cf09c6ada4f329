"""The HTTP server around the app: uvicorn (httptools) with a bounded request head, and
logging set up so our own lines (the JSON access log included) reach stderr/stdout."""

from __future__ import annotations

import copy
import gc
import json
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mimiverse.config import Settings


class HeadTooLarge(Exception):
    """The request line and headers went over the limit."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """httptools keeps every header it parses; this stops at `max_head_bytes` with 431.

    Counting happens in the parser's callbacks, so a body that arrives in the same read
    as the head is never counted; raising there makes uvicorn answer its parse-error
    response, which `send_400_response` turns into our 431.
    """

    max_head_bytes = 32 * 1024
    _head_bytes = 0
    _head_too_large = False

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._head_too_large = True
            raise HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refused (conflicting Content-Length and
        Transfer-Encoding, a malformed line...), answered in our JSON error shape; the
        app never sees it, and the connection closes."""
        if self._head_too_large:
            status = b"431 Request Header Fields Too Large"
            error = {"type": "request_header_fields_too_large",
                     "message": f"the request line and headers are over "
                                f"{self.max_head_bytes} bytes"}
        else:
            status = b"400 Bad Request"
            error = {"type": "invalid_request", "message": msg or "malformed HTTP request"}
        body = json.dumps({"error": error}).encode()
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()


def bounded_protocol(max_head_bytes: int) -> type[BoundedHeadProtocol]:
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,), {"max_head_bytes": max_head_bytes})


def _lighter_log_records() -> None:
    """No format here names a caller's file or line, a thread or a process: skip finding
    them for every record, as the logging docs' "Optimization" table says. The access log
    writes a record per request; this halves its cost."""
    logging._srcfile = None  # the documented switch for the stack walk of findCaller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging, plus `mimiverse.*` at the configured level and the access log
    (one JSON object per line on stdout; off with [server] access_log = false)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    # No handler writes a URL's credentials (a backend's, say), whoever logs it.
    config["filters"] = {"credentials": {"()": "mimiverse.credentials.CredentialFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["credentials"]
    config["formatters"]["line"] = {"format": "%(message)s"}
    config["handlers"]["access_lines"] = {
        "class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stdout",
        "filters": ["credentials"],
    }
    config["loggers"]["mimiverse"] = {
        "handlers": ["default"], "level": settings.server.log_level.upper(), "propagate": False,
    }
    config["loggers"]["mimiverse.access"] = {
        "handlers": ["access_lines"], "propagate": False,
        "level": "INFO" if settings.server.access_log else "CRITICAL",
    }
    return config


# Collect the young generation every 7,000 allocations (Python's default: 700), the older
# ones less often too: a request allocates many short-lived objects and few that last.
GC_THRESHOLDS = (7000, 20, 100)


class Server(uvicorn.Server):
    """uvicorn's server, with the process settled for serving once the app has started:
    log records skip what no format here shows, and what start-up made (the app, settings,
    models, compiled patterns) lives as long as the process, so it is frozen out of every
    later garbage collection (`gc.freeze`), and collections come less often. The GC part
    alone: ~0.05 ms less CPU per completion (docs/benchmarks.md)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        _lighter_log_records()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "http": bounded_protocol(settings.server.max_header_bytes),
        "ws": "none",
        "log_level": settings.server.log_level,
        "log_config": log_config(settings),
        "access_log": False,  # uvicorn's line shows the query string; ours is mimiverse.access
        "server_header": False,
    }
    return uvicorn.Config(app, **{**options, **overrides})
