"""Fixtures for the llama.cpp tests: the tiny model, and backends loading it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from mimiverse.config import BackendSettings
from tests.support.fixtures import tiny_embed_gguf as tiny_embed_gguf
from tests.support.fixtures import tiny_gguf as tiny_gguf
from tests.support.fixtures import tiny_q4_gguf as tiny_q4_gguf
from tests.support.tiny_gguf import TinyModelInfo

if TYPE_CHECKING:
    from mimiverse.backends.llamacpp import LlamaCppBackend

# The rendered Qwen2.5-Coder FIM prompt (prefix-suffix-middle order).
FIM_PROMPT = "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>"


def llamacpp_settings(path: object, *, name: str = "tiny", n_ctx: int = 2048) -> BackendSettings:
    return BackendSettings(name=name, kind="llamacpp", model_path=str(path), n_ctx=n_ctx)


@pytest.fixture
async def backend(tiny_gguf: TinyModelInfo) -> AsyncIterator[LlamaCppBackend]:
    # Imported here so a missing llama-cpp-python skips (in the test modules), not errors.
    from mimiverse.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(llamacpp_settings(tiny_gguf.path))
    yield b
    await b.aclose()
