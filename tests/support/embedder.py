"""A deterministic embedding backend for ranking tests: hashed bag of code tokens.

Texts sharing tokens get similar vectors, so vector rankings are meaningful and exact.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Sequence

from mimiverse.backends.base import Backend, Passthrough
from mimiverse.config import BackendSettings
from mimiverse.errors import BackendUnavailable
from mimiverse.index.tokenize import query_tokens, tokens

DIM = 64


def bow_vector(text: str, dim: int = DIM) -> list[float]:
    vec = [0.0] * dim
    for token in query_tokens(text) if len(text) < 200 else tokens(text):
        vec[zlib.crc32(token.encode()) % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class BowEmbedder(Backend):
    kind = "bow"
    tasks = frozenset({"embedding"})

    def __init__(self, name: str = "bow", dim: int = DIM) -> None:
        super().__init__(BackendSettings(name=name, kind="openai", url="http://127.0.0.1:9"))
        self.dim = dim
        self.calls = 0
        self.texts = 0
        self.down = False
        self.gate: asyncio.Event | None = None  # when set, embedding waits for it

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise BackendUnavailable("embedder is down", backend=self.name)
        self.calls += 1
        self.texts += len(texts)
        return [bow_vector(t, self.dim) for t in texts]
