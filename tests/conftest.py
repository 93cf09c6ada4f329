"""Shared fixtures. Test doubles are real loopback servers speaking the real protocols."""

from __future__ import annotations

import os
import shutil
import tempfile
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


@pytest.fixture(scope="session", autouse=True)
def no_model_downloads() -> Iterator[None]:
    """No test fetches a model or finds the developer's own (a default configuration
    would load it): the model folders are empty throwaway ones and Hugging Face is
    offline; tests of fetching point these elsewhere themselves. Set in os.environ, so
    servers started as processes inherit it."""
    root = tempfile.mkdtemp(prefix="mimiverse-test-models-")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIMIVERSE_MODELS_DIR", os.path.join(root, "models"))
        mp.setenv("HF_HUB_CACHE", os.path.join(root, "hub"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    shutil.rmtree(root, ignore_errors=True)


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
