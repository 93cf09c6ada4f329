"""The HTTP server around the app: uvicorn (httptools) with a bounded request head and
one write per answer, and logging set up so our own lines (the JSON access log included)
reach stderr/stdout."""

from __future__ import annotations

import asyncio
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


class OneWritePerAnswer(asyncio.Transport):
    """A connection's transport that sends the head of a response of known length
    together with its body. uvicorn writes the two apart: a system call, a TCP segment and
    a wake-up of the client more for every answer (docs/benchmarks.md). The head of a
    streamed (chunked) response still goes out at once; a held head with no body to
    follow (HEAD) goes out when the response completes."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._held = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n" and (
                b"\r\ncontent-length: " in data):  # uvicorn writes header names lowercased
            self._held = bytes(data)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held:
            data, self._held = self._held, b""
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = b""
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()


class BoundedHeadProtocol(HttpToolsProtocol):
    """httptools keeps every header it parses; this stops at `max_head_bytes` with 431.

    Counting happens in the parser's callbacks, so a body that arrives in the same read
    as the head is never counted; raising there makes uvicorn answer its parse-error
    response, which `send_400_response` turns into our 431.
    """

    max_head_bytes = 32 * 1024
    _head_bytes = 0
    _head_too_large = False

    transport: OneWritePerAnswer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWritePerAnswer(transport))

    def on_response_complete(self) -> None:
        self.transport.flush()
        super().on_response_complete()

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
