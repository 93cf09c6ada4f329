"""Shared pieces of HTTP backends: one pooled client each, and client errors mapped once.

The upstream client is aiohttp: on the request path it costs about half the CPU of httpx
per streamed request (measured with bench/gateway_overhead.py; see docs/benchmarks.md),
and the gateway's throughput budget is set by exactly that cost.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http import HTTPStatus
from typing import Any

import aiohttp
import orjson

from mimiverse.backends.base import Backend
from mimiverse.config import BackendSettings
from mimiverse.errors import (
    BackendError,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)

JSON_HEADERS = {"Content-Type": "application/json"}
MAX_LINE_BYTES = 1 << 20  # one streamed event; far above any token's


class HttpBackend(Backend):
    """A backend reached over HTTP through one pooled `aiohttp.ClientSession`."""

    def __init__(self, config: BackendSettings) -> None:
        super().__init__(config)
        self.base_url = (config.url or "").rstrip("/")
        t = config.timeouts
        # sock_read bounds the wait for any byte; the router enforces the tighter
        # first-token / between-token / total limits itself, the same for every kind.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect_s, sock_connect=t.connect_s, sock_read=t.total_s
        )
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that serves requests.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections, limit_per_host=self.config.max_connections,
                enable_cleanup_closed=False, ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                base_url=None, connector=connector, timeout=self._timeout,
                headers=self._headers, json_serialize=lambda o: orjson.dumps(o).decode(),
                trust_env=False,  # never route model traffic through an environment proxy
                auto_decompress=True,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    @contextmanager
    def mapped_errors(self) -> Iterator[None]:
        """Translate client failures into our exception tree (the only place that does)."""
        try:
            yield
        except BackendError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise BackendTimeout(f"timed out ({type(exc).__name__})", backend=self.name) from exc
        except aiohttp.ClientConnectorError as exc:
            raise BackendUnavailable(
                f"cannot reach {self.config.url}: {exc.os_error or exc}", backend=self.name
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise BackendUnavailable(
                f"{self.config.url}: connection dropped before the response was complete",
                backend=self.name,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            raise BackendUnavailable(f"{self.config.url}: {why}", backend=self.name) from exc
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError,
                UnicodeDecodeError) as exc:
            raise BackendProtocolError(f"unexpected response: {exc}", backend=self.name) from exc

    def _status_error(self, status: int, body: bytes) -> BackendError:
        summary = error_summary(status, body)
        if status >= 500 or status == 429:
            return BackendUnavailable(summary, backend=self.name)
        return BackendRejected(summary, backend=self.name, status_code=status)

    async def post_json(
        self, path: str, payload: dict[str, Any], *, first_byte_s: float | None = None
    ) -> Any:
        """`first_byte_s`: how long the answer may take to begin (its status line); the
        rest of it then arrives within the backend's total timeout."""
        return await self._json("POST", path, orjson.dumps(payload), JSON_HEADERS, first_byte_s)

    async def post_form(self, path: str, form: aiohttp.FormData) -> Any:
        """POST multipart/form-data (e.g. audio) and read a JSON answer."""
        return await self._json("POST", path, form, None)  # aiohttp sets its content type

    async def get_json(self, path: str) -> Any:
        return await self._json("GET", path, None, None)

    async def _json(
        self, method: str, path: str, body: bytes | aiohttp.FormData | None,
        headers: dict[str, str] | None, first_byte_s: float | None = None,
    ) -> Any:
        first_byte = asyncio.timeout(first_byte_s)
        with self.mapped_errors():
            try:
                async with first_byte, self.session.request(
                    method, self.base_url + path, data=body, headers=headers,
                ) as response:
                    first_byte.reschedule(None)  # it began: the rest within total_s
                    content = await response.read()
            except TimeoutError:
                if not first_byte.expired():
                    raise
                raise BackendTimeout(f"{path}: no answer began within {first_byte_s:g}s",
                                     backend=self.name) from None
            if response.status >= 400:
                raise self._status_error(response.status, content)
            return orjson.loads(content)

    @asynccontextmanager
    async def stream_lines(
        self, path: str, payload: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[list[str]]]:
        """POST and yield the response body's lines (NDJSON or SSE), without EOLs, in
        batches: every complete line each read brought; the last batch ends with an
        empty line."""
        with self.mapped_errors():
            async with self.session.post(
                self.base_url + path, data=orjson.dumps(payload), headers=JSON_HEADERS
            ) as response:
                if response.status >= 400:
                    raise self._status_error(response.status, await response.read())
                yield _line_batches(response.content)


async def _line_batches(content: aiohttp.StreamReader) -> AsyncIterator[list[str]]:
    # One step per read, not per line: a streamed answer's events mostly arrive together,
    # and each async step costs more than splitting the lines.
    pending = b""
    async for chunk in content.iter_any():
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > MAX_LINE_BYTES:
            raise ValueError(f"a line longer than {MAX_LINE_BYTES} bytes")  # mapped: 502
        if lines:
            yield [line.decode("utf-8").rstrip("\r") for line in lines]
    # The body's end ends its last line, and a last event as a blank line would (some
    # servers omit the final one; NDJSON readers skip blank lines anyway).
    yield [pending.decode("utf-8").rstrip("\r"), ""] if pending else [""]


def error_summary(status: int, content: bytes) -> str:
    """An upstream error as its status and a short reason, never its body: an error page
    or a message may quote the prompt, the code or a credential back.

    The reason is the status's phrase, the error's `type`/`code` when it is a short
    identifier, and "model X not found" (what Ollama and vLLM answer for a model that is
    not there, which tells an operator what to fix)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    summary = f"HTTP {status} {phrase}"
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return summary
    reason = error_reason(body.get("error", body) if isinstance(body, dict) else None)
    return f"{summary}: {reason}" if reason else summary


def error_reason(error: object) -> str | None:
    """A short reason from an upstream's error object or message (see `error_summary`),
    or None: its text is never passed on."""
    if isinstance(error, str) and error.startswith("{"):
        try:
            error = orjson.loads(error)
        except orjson.JSONDecodeError:
            return None
        if isinstance(error, dict):
            error = error.get("error", error)
    message = error.get("message") if isinstance(error, dict) else error
    found = _MODEL_NOT_FOUND.search(message) if isinstance(message, str) else None
    if found is not None:
        return f'model "{found.group(1)}" not found'
    if isinstance(error, dict):
        for key in ("code", "type"):  # the code is the more specific (model_not_found)
            value = error.get(key)
            if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
                return value
    return None


def stream_error(path: str, error: object) -> str:
    """The message for an error an upstream reported inside a stream (after its 200)."""
    reason = error_reason(error)
    return f"{path}: upstream error" + (f": {reason}" if reason else "")


_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_MODEL_NOT_FOUND = re.compile(r"""model ['"]?([\w.:/\-]{1,128})['"]? not found""")


def checked_vectors(vectors: object, count: int, *, backend: str) -> list[list[float]]:
    """`vectors` as float lists: exactly `count` of them, all numbers, one shared dimension.

    A short batch or a ragged one would silently pair texts with the wrong vectors or break
    the vector index later; refuse it here, where the backend is known.
    """
    if not isinstance(vectors, list) or len(vectors) != count:
        got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
        raise BackendProtocolError(f"expected {count} embeddings, got {got}", backend=backend)
    out: list[list[float]] = []
    dim = -1
    for i, vec in enumerate(vectors):
        if not isinstance(vec, list) or not vec:
            raise BackendProtocolError(f"embedding {i} is not a non-empty list", backend=backend)
        if dim < 0:
            dim = len(vec)
        elif len(vec) != dim:
            raise BackendProtocolError(
                f"embedding {i} has dimension {len(vec)}, expected {dim}", backend=backend
            )
        # type() rather than isinstance(): bools are ints but never vector components.
        if not all(type(x) is float or type(x) is int for x in vec):
            raise BackendProtocolError(f"embedding {i} holds non-numbers", backend=backend)
        out.append([float(x) for x in vec])
    return out
