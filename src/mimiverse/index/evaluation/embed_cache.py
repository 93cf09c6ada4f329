"""Embeddings remembered on disk between evaluation runs, keyed by model and text.

Embedding is the slow part of an evaluation (~80 chunks/s on 2 cores), and most chunk
texts do not change between two runs. The cache is one `.npz` file: `keys` (16-byte
digests of model + text) and `vectors` (float32 rows), read with allow_pickle=False.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mimiverse.backends.base import NO_EXTRAS, Backend, EmbedExtras
from mimiverse.config import Settings
from mimiverse.routing.router import Router

Floats = npt.NDArray[np.float32]


def _key(model: str, text: str) -> bytes:
    return hashlib.sha256(f"{model}\x00{text}".encode("utf-8", "surrogatepass")).digest()[:16]


class EmbeddingCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._vectors: dict[bytes, Floats] = {}
        self.hits = 0
        self.misses = 0
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
            self._vectors = {bytes(k): v for k, v in zip(keys, vectors, strict=True)}
        self._saved = len(self._vectors)

    def get(self, model: str, texts: Sequence[str]) -> list[Floats | None]:
        return [self._vectors.get(_key(model, t)) for t in texts]

    def put(self, model: str, texts: Sequence[str], vectors: Sequence[Sequence[float]]) -> None:
        for text, vector in zip(texts, vectors, strict=True):
            self._vectors[_key(model, text)] = np.asarray(vector, dtype=np.float32)

    def save(self) -> None:
        if self.path is None or len(self._vectors) == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._vectors), dtype="S16")
        vectors = np.stack(list(self._vectors.values()))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as out:
            np.savez(out, keys=keys, vectors=vectors)
        os.replace(tmp, self.path)
        self._saved = len(self._vectors)


class CachingRouter(Router):
    """A router whose embeddings come from the cache where it has them."""

    def __init__(self, settings: Settings, backends: dict[str, Backend],
                 cache: EmbeddingCache) -> None:
        super().__init__(settings, backends)
        self.cache = cache

    async def embed(self, texts: Sequence[str], extras: EmbedExtras = NO_EXTRAS
                    ) -> tuple[list[list[float]], Backend, str]:
        if extras.fields:  # the cache holds plain vectors only
            return await super().embed(texts, extras)
        model = self.route("embedding").model
        known = self.cache.get(model, texts)
        missing = [t for t, v in zip(texts, known, strict=True) if v is None]
        backend = None
        if missing:
            fresh, backend, model = await super().embed(missing)
            self.cache.put(model, missing, fresh)
            self.cache.misses += len(missing)
            known = self.cache.get(model, texts)
        self.cache.hits += len(texts) - len(missing)
        if backend is None:
            backend = self.candidates("embedding")[0]
        return [v.tolist() for v in known if v is not None], backend, model
