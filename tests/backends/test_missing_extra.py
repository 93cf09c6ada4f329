"""A default backend whose extra is missing still lets the gateway start, and says why."""

from __future__ import annotations

import pytest

from mimiverse.backends import registry
from mimiverse.backends.base import GenerateRequest
from mimiverse.backends.missing import MissingExtraBackend
from mimiverse.config import BackendSettings, load_settings
from mimiverse.errors import BackendUnavailable, ConfigError


def _no_llama_cpp() -> type:
    raise ConfigError("backend kind 'llamacpp' needs llama-cpp-python: install "
                      "mimiverse[llamacpp] (No module named 'llama_cpp')")


@pytest.fixture
def without_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = registry.BACKEND_KINDS
    assert isinstance(kinds, registry._BackendKinds)
    monkeypatch.delitem(kinds._classes, "llamacpp", raising=False)
    monkeypatch.setitem(kinds._loaders, "llamacpp", _no_llama_cpp)


async def test_the_default_embedded_llm_answers_503_saying_what_to_install(
    without_llama_cpp: None,
) -> None:
    config = next(b for b in load_settings().backends if b.name == "embedded-llm")
    backend = registry.build_backend(config)
    assert isinstance(backend, MissingExtraBackend) and backend.kind == "llamacpp"
    with pytest.raises(BackendUnavailable, match=r"install mimiverse\[llamacpp\].*make run"):
        await backend.check_health()
    with pytest.raises(BackendUnavailable, match="needs llama-cpp-python"):
        backend.stream_generate(GenerateRequest(model="m", prompt="x", max_tokens=1))


def test_a_declared_llamacpp_backend_still_refuses_to_start(without_llama_cpp: None) -> None:
    config = BackendSettings(name="mine", kind="llamacpp", model_path="/m.gguf")
    with pytest.raises(ConfigError, match="needs llama-cpp-python"):
        registry.build_backend(config)


def test_a_declared_backend_with_a_default_name_still_refuses_to_start(
    without_llama_cpp: None,
) -> None:
    config = BackendSettings(name="embedded-llm", kind="llamacpp", model_path="/m.gguf")
    with pytest.raises(ConfigError, match="needs llama-cpp-python"):
        registry.build_backend(config)
