"""Mimiverse on loopback in front of the protocol test servers, with realistic model names
(the ones the recorded client bodies in fixtures/ name), and the official clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import ollama
import openai
import pytest

from mimiverse.config import Settings, load_settings
from tests.api.conftest import Serve, serve
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer

__all__ = ["serve"]  # the shared fixture: every server started is stopped at the end

COMPLETION_MODEL = "qwen2.5-coder:1.5b-base"
CHAT_MODEL = "qwen2.5-coder:7b-instruct"
EMBEDDING_MODEL = "nomic-embed-text"
QWEN = "<|fim_prefix|>{}<|fim_suffix|>{}<|fim_middle|>"



def compat_settings(*backends: tuple[str, str, str], **overrides: Any) -> Settings:
    names = [name for name, _, _ in backends]
    return load_settings(
        None,
        backends=[{"name": n, "kind": k, "url": u} for n, k, u in backends],
        models={
            "completion": {"model": COMPLETION_MODEL, "family": "qwen2.5-coder",
                           "backends": names},
            "chat": {"model": CHAT_MODEL, "backends": names},
            "embedding": {"model": EMBEDDING_MODEL, "backends": names},
        },
        **overrides,
    )


@dataclass
class Upstream:
    """One loopback backend of a kind ("ollama" | "openai") and the route of it a test
    watches; tests parametrised over both kinds pick theirs with `pick_upstream`."""

    kind: str
    server: ServerHandle
    path: str

    def sent(self) -> dict[str, Any]:
        """The body the backend received last on `path`."""
        body: dict[str, Any] = self.server.behaviour.last_request[self.path]
        return body

    def calls(self) -> int:
        return int(self.server.behaviour.requests.get(self.path, 0))

    def settings(self) -> Settings:
        """Every task routed to this backend alone."""
        return compat_settings((self.kind, self.kind, self.server.url))


def pick_upstream(request: pytest.FixtureRequest, ollama_server: ServerHandle,
                  openai_server: ServerHandle, paths: dict[str, str]) -> Upstream:
    """The upstream of the kind a fixture is parametrised with, watched on its `paths` route."""
    kind = str(request.param)
    return Upstream(kind, ollama_server if kind == "ollama" else openai_server, paths[kind])


@pytest.fixture
def app(serve: Serve, ollama_server: ServerHandle) -> AppServer:
    """Mimiverse whose every task routes to the loopback Ollama."""
    return serve(compat_settings(("ollama", "ollama", ollama_server.url)))


@pytest.fixture
async def oai(app: AppServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0,
                                http_client=httpx.AsyncClient(trust_env=False, timeout=10))
    async with client:
        yield client


@pytest.fixture
async def oll(app: AppServer) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=app.url, trust_env=False, timeout=10)
    yield client
    await client.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client
