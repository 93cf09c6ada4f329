"""Shared pieces of HTTP backends: one pooled client each, and httpx errors mapped once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
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


class HttpBackend(Backend):
    """A backend reached over HTTP through one pooled `httpx.AsyncClient`."""

    def __init__(
        self, config: BackendSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(config)
        t = config.timeouts
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = httpx.AsyncClient(
            base_url=(config.url or "").rstrip("/"),
            headers=headers,
            # read covers the wait for the first byte and between chunks; the router
            # enforces the tighter first-token / between-token / total limits itself.
            timeout=httpx.Timeout(
                connect=t.connect_s, read=t.total_s, write=t.total_s, pool=t.connect_s
            ),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
            transport=transport,
            trust_env=False,  # never route model traffic through an environment proxy
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    @contextmanager
    def mapped_errors(self) -> Iterator[None]:
        """Translate httpx failures into our exception tree (the only place that does)."""
        try:
            yield
        except BackendError:
            raise
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"timed out ({type(exc).__name__})", backend=self.name) from exc
        except httpx.HTTPStatusError as exc:
            raise self._status_error(exc.response) from exc
        except httpx.DecodingError as exc:
            # A body that cannot be decoded (bad gzip, ...) is a broken answer, not a lost peer.
            raise BackendProtocolError(f"undecodable response: {exc}", backend=self.name) from exc
        except (httpx.HTTPError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            raise BackendUnavailable(
                f"cannot reach {self.config.url}: {why}", backend=self.name
            ) from exc
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BackendProtocolError(f"unexpected response: {exc}", backend=self.name) from exc

    def _status_error(self, response: httpx.Response) -> BackendError:
        detail = _error_detail(response)
        code = response.status_code
        if code >= 500 or code == 429:
            return BackendUnavailable(f"HTTP {code}: {detail}", backend=self.name)
        return BackendRejected(f"HTTP {code}: {detail}", backend=self.name, status_code=code)

    async def post_json(self, path: str, payload: dict[str, Any]) -> Any:
        with self.mapped_errors():
            response = await self.client.post(path, content=orjson.dumps(payload),
                                               headers={"Content-Type": "application/json"})
            if response.status_code >= 400:
                raise self._status_error(response)
            return orjson.loads(response.content)

    async def get_json(self, path: str) -> Any:
        with self.mapped_errors():
            response = await self.client.get(path)
            if response.status_code >= 400:
                raise self._status_error(response)
            return orjson.loads(response.content)

    @asynccontextmanager
    async def stream_lines(
        self, path: str, payload: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[str]]:
        """POST and yield the response body line by line (NDJSON or SSE)."""
        with self.mapped_errors():
            async with self.client.stream(
                "POST", path, content=orjson.dumps(payload),
                headers={"Content-Type": "application/json"},
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._status_error(response)
                yield response.aiter_lines()


def _error_detail(response: httpx.Response) -> str:
    """The backend's own error message, short, without echoing prompts back."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:200]
    return str(body)[:200]


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
