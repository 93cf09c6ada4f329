"""Fixtures for end-to-end tests: our server on loopback in front of protocol test servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import httpx
import pytest

from mimiverse.backends.base import Backend
from mimiverse.config import Settings
from tests.support.app_server import AppServer, serve_app
from tests.support.redis_server import redis_server

__all__ = ["redis_server"]

Serve = Callable[..., AppServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start Mimiverse with the given settings; every server started is stopped at the end."""
    started: list[AppServer] = []

    def start(settings: Settings, backends: dict[str, Backend] | None = None,
              repos: Sequence[str] = ()) -> AppServer:
        server = serve_app(settings, backends, repos)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client
