"""The plain parts hybrid search must beat, run on the very chunks the index holds.

- `bm25`: Okapi BM25 (k1 = 1.2, b = 0.75, Lucene's IDF) over the code-aware tokens of a
  chunk's text alone: no path, no symbol, no fields, no priors.
- `dense`: the embedding model on the chunk's bare text, ranked by cosine similarity.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mimiverse.index.store.sqlite_vectors import similarities, top, unit_rows
from mimiverse.index.tokenize import query_tokens, tokens

Floats = npt.NDArray[np.float32]
K1 = 1.2
B = 0.75


class PlainBM25:
    def __init__(self, texts: Sequence[str]) -> None:
        self.n = len(texts)
        postings: dict[str, list[tuple[int, int]]] = {}
        lengths = np.zeros(self.n, np.float32)
        for i, text in enumerate(texts):
            terms = tokens(text)
            lengths[i] = len(terms)
            for term, count in Counter(terms).items():
                postings.setdefault(term, []).append((i, count))
        avgdl = float(lengths.mean()) if self.n else 1.0
        self.norm = K1 * (1 - B + B * lengths / max(avgdl, 1.0))
        self.postings = {
            t: (np.array([d for d, _ in p], np.int64), np.array([c for _, c in p], np.float32))
            for t, p in postings.items()
        }

    def search(self, query: str, limit: int) -> list[int]:
        scores = np.zeros(self.n, np.float32)
        for term in query_tokens(query):
            found = self.postings.get(term)
            if found is None:
                continue
            docs, tf = found
            idf = math.log(1 + (self.n - len(docs) + 0.5) / (len(docs) + 0.5))
            scores[docs] += idf * tf * (K1 + 1) / (tf + self.norm[docs])
        return _top(scores, limit)


class Dense:
    def __init__(self, vectors: Sequence[Sequence[float]]) -> None:
        self.matrix = unit_rows(np.asarray(vectors, dtype=np.float32))

    def search(self, vector: Sequence[float], limit: int) -> list[int]:
        scores = similarities(self.matrix, np.asarray(vector, dtype=np.float32))
        return _top(scores, limit, positive=False)


def _top(scores: Floats, limit: int, *, positive: bool = True) -> list[int]:
    rows = np.flatnonzero(scores > 0) if positive else np.arange(len(scores))
    return [i for i, _ in top(rows, scores[rows], limit)]
