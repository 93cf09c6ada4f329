"""The default configuration, and configurations that compose with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimiverse.config import load_settings
from mimiverse.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mimiverse.toml"
    path.write_text(text)
    return path


def test_defaults_put_the_embedded_model_behind_ollama() -> None:
    settings = load_settings()
    assert settings.models.completion.backends == ["local-ollama", "embedded-llm"]
    assert settings.models.chat.backends == ["local-ollama", "embedded-llm"]
    assert settings.models.embedding.backends == ["embedded"]
    llm = next(b for b in settings.backends if b.name == "embedded-llm")
    assert (llm.kind, llm.model, llm.model_path) == ("llamacpp", "qwen2.5-coder-0.5b-instruct",
                                                     None)


def test_one_declared_backend_keeps_the_defaults_the_routes_name(tmp_path: Path) -> None:
    config = write(tmp_path, """
[[backends]]
name = "vllm"
kind = "openai"
url = "http://127.0.0.1:8000"

[models.completion]
model = "qwen2.5-coder:7b"
backends = ["vllm", "embedded-llm"]
""")
    settings = load_settings(config)
    names = [b.name for b in settings.backends]
    # chat still names local-ollama and embedded-llm, embeddings name embedded: all kept.
    assert names == ["vllm", "embedded-llm", "local-ollama", "embedded"]
    assert settings.models.chat.backends == ["local-ollama", "embedded-llm"]


def test_a_config_that_sets_only_the_completion_model_works(tmp_path: Path) -> None:
    config = write(tmp_path, '[models.completion]\nmodel = "qwen2.5-coder:3b"\n'
                             'backends = ["local-ollama"]\n')
    settings = load_settings(config)
    assert {b.name for b in settings.backends} == {"local-ollama", "embedded-llm", "embedded"}


def test_an_unknown_backend_name_says_what_to_add(tmp_path: Path) -> None:
    config = write(tmp_path, '[models.chat]\nmodel = "m"\nbackends = ["ghost"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "models.chat.backends names 'ghost'" in message
    assert "add a [[backends]] entry with name = 'ghost'" in message


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "needs either model_path = a GGUF file or model = a catalog name"),
    ({"model": "gpt-5", }, "model 'gpt-5' is not in the catalog; known: qwen2.5-coder-0.5b"),
    ({"model": "qwen2.5-coder-0.5b-instruct", "model_path": "/m.gguf"}, "needs either"),
])
def test_a_llamacpp_backend_names_one_model(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(backends=[{"name": "l", "kind": "llamacpp", **fields}])
