"""Shared fixtures. Test doubles are real loopback servers speaking the real protocols."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers.harness import ServerHandle, run_in_thread
from tests.servers.ollama_server import OllamaApp
from tests.servers.openai_server import OpenAIApp


@pytest.fixture(autouse=True, scope="session")
def _data_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Indexes the tests make live in a throwaway data folder, never the user's
    (`[index] data_dir` defaults to $XDG_DATA_HOME/mimiverse; subprocesses inherit it)."""
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))


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
