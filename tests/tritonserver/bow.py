"""The deterministic embedding the test Triton serves: a hashed bag of words, numpy only.

Imported by the server script (in the pytriton venv, numpy < 2) and by the tests (main
venv), so the tests can compute the exact vectors the server must return.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

DIM = 64
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def bow_vector(text: str, dim: int = DIM) -> np.ndarray:
    """Unit-length counts of crc32-hashed words (a zero vector for a text without words)."""
    vec = np.zeros(dim, dtype=np.float32)
    for word in _WORD.findall(text.lower()):
        vec[zlib.crc32(word.encode()) % dim] += 1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec
