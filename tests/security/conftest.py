"""Mimiverse on loopback, in front of a loopback OpenAI-compatible server, with tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer, serve_app, settings_for

TOKEN = "team-token-0123456789abcdef"
OTHER_TOKEN = "second-token-fedcba9876543210"

Serve = Callable[..., AppServer]


@pytest.fixture
def serve(openai_server: ServerHandle) -> Iterator[Serve]:
    """serve(**settings overrides): every server started is stopped at the end."""
    started: list[AppServer] = []

    def start(**overrides: Any) -> AppServer:
        settings = settings_for(("upstream", "openai", openai_server.url), **overrides)
        server = serve_app(settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
