"""Shared fixtures. Test doubles are real loopback servers speaking the real protocols."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.harness import ServerHandle, run_in_thread
from tests.servers.ollama_server import OllamaApp
from tests.servers.openai_server import OpenAIApp


@pytest.fixture
def ollama_server() -> Iterator[ServerHandle]:
    """A loopback Ollama; steer it with `.behaviour`, point clients at `.url`."""
    with run_in_thread(OllamaApp()) as handle:
        yield handle


@pytest.fixture
def openai_server() -> Iterator[ServerHandle]:
    """A loopback OpenAI-compatible server (`.url` has no /v1: backends add the paths)."""
    with run_in_thread(OpenAIApp()) as handle:
        yield handle
