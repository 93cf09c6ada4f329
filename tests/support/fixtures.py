"""Fixtures built on the helpers here; a conftest imports the ones it needs by name."""

from __future__ import annotations

import gguf
import pytest

from tests.support.tiny_gguf import TinyModelInfo, write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> TinyModelInfo:
    """The tiny random-weight Qwen-vocabulary GGUF, written once per session."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-coder.gguf")


@pytest.fixture(scope="session")
def tiny_embed_gguf(tmp_path_factory: pytest.TempPathFactory) -> TinyModelInfo:
    """The same tiny model declaring mean pooling, as embedding GGUFs do."""
    path = tmp_path_factory.mktemp("models") / "tiny-embed.gguf"
    return write_tiny_gguf(path, embedding=True)


@pytest.fixture(scope="session")
def tiny_q4_gguf(tmp_path_factory: pytest.TempPathFactory) -> TinyModelInfo:
    """The tiny model with its layers quantized to Q4_0 (as real GGUFs are quantized)."""
    path = tmp_path_factory.mktemp("models") / "tiny-coder-q4_0.gguf"
    return write_tiny_gguf(path, quant=gguf.GGMLQuantizationType.Q4_0)
