"""A repository's vectors in memory for the SQLite store: exact search by a mat-vec."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from mimiverse.index.store import compiled_glob

T = TypeVar("T")
Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]
Codes = npt.NDArray[np.int32]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of one repository's vectors, safe to search without a lock."""

    ids: Ints
    matrix: Floats  # L2-normalised rows
    alive: Mask  # False for rows removed since the last compaction
    file_of: Codes  # row -> index into VectorCache.paths
    lang_of: Codes  # row -> index into VectorCache.languages
    files: int  # how many paths the rows may refer to


class VectorCache:
    """One repository's vectors in memory, appended to and tombstoned incrementally.

    Rows are appended into spare capacity, so an older snapshot (a view of the first n
    rows) stays valid while a refresh appends; removal only flips `alive` in a new copy.
    """

    def __init__(self, dim: int, seq: int) -> None:
        self.dim = dim
        self.seq = seq
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.languages: list[str | None] = []
        self._path_ix: dict[str, int] = {}
        self._lang_ix: dict[str | None, int] = {}
        self._row_of: dict[int, int] = {}
        self._n = 0
        self._dead = 0
        self._ids: Ints = np.empty(0, np.int64)
        self._matrix: Floats = np.empty((0, dim), np.float32)
        self._file_of: Codes = np.empty(0, np.int32)
        self._lang_of: Codes = np.empty(0, np.int32)
        self._alive: Mask = np.empty(0, np.bool_)
        self._globs: dict[str, Mask] = {}
        self._snapshot: Snapshot | None = None

    def language_code(self, language: str | None) -> int | None:
        return self._lang_ix.get(language)

    def remove(self, ids: Iterable[int]) -> None:
        rows = [r for r in (self._row_of.pop(i, None) for i in ids) if r is not None]
        if rows:
            self._alive = self._alive.copy()  # the current snapshot keeps the old mask
            self._alive[rows] = False
            self._dead += len(rows)
            self._snapshot = None

    def append(self, rows: Sequence[tuple[int, str, str | None, bytes]]) -> None:
        if not rows:
            return
        self.remove([r[0] for r in rows])  # a re-stored vector replaces the old row
        n, m = self._n, len(rows)
        if n + m > len(self._ids):
            self._grow(max(n + m, 2 * len(self._ids), 1024))
        raw = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(m, self.dim)
        self._matrix[n : n + m] = unit_rows(raw)
        self._ids[n : n + m] = [r[0] for r in rows]
        self._file_of[n : n + m] = [_code(self._path_ix, self.paths, r[1]) for r in rows]
        self._lang_of[n : n + m] = [_code(self._lang_ix, self.languages, r[2]) for r in rows]
        alive = np.ones(n + m, np.bool_)
        alive[:n] = self._alive[:n]
        self._alive = alive
        for offset, r in enumerate(rows):
            self._row_of[r[0]] = n + offset
        self._n = n + m
        self._snapshot = None

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            if self._dead > 1024 and self._dead * 4 > self._n:
                self._compact()
            n = self._n
            self._snapshot = Snapshot(
                self._ids[:n], self._matrix[:n], self._alive[:n],
                self._file_of[:n], self._lang_of[:n], len(self.paths),
            )
        return self._snapshot

    def path_mask(self, glob: str, files: int) -> Mask:
        """Which of the first `files` paths match `glob`, computed once per new path."""
        with self.lock:
            known = self._globs.get(glob, np.empty(0, np.bool_))
            if len(known) < files:
                pattern = compiled_glob(glob)
                extra = [pattern.search(p) is not None for p in self.paths[len(known) : files]]
                known = np.concatenate([known, np.array(extra, np.bool_)])
                if len(self._globs) >= 64:
                    self._globs.clear()
                self._globs[glob] = known
            return known[:files]

    def _grow(self, capacity: int) -> None:
        n = self._n
        ids = np.empty(capacity, np.int64)
        matrix = np.empty((capacity, self.dim), np.float32)
        file_of = np.empty(capacity, np.int32)
        lang_of = np.empty(capacity, np.int32)
        ids[:n], matrix[:n] = self._ids[:n], self._matrix[:n]
        file_of[:n], lang_of[:n] = self._file_of[:n], self._lang_of[:n]
        self._ids, self._matrix, self._file_of, self._lang_of = ids, matrix, file_of, lang_of

    def _compact(self) -> None:
        keep = np.flatnonzero(self._alive[: self._n])
        self._ids, self._matrix = self._ids[keep], self._matrix[keep]
        self._file_of, self._lang_of = self._file_of[keep], self._lang_of[keep]
        self._alive = np.ones(len(keep), np.bool_)
        self._row_of = {int(cid): row for row, cid in enumerate(self._ids)}
        self._n, self._dead = len(keep), 0


def _code(index: dict[T, int], values: list[T], value: T) -> int:
    """The small integer standing for `value` in `values`, added on first sight."""
    code = index.get(value)
    if code is None:
        code = index[value] = len(values)
        values.append(value)
    return code



def unit_rows(raw: Floats) -> Floats:
    """Rows scaled to length 1, so a dot product is the cosine similarity."""
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # a zero vector stays zero: similarity 0 to everything
    unit: Floats = raw / norms
    return unit


def similarities(matrix: Floats, query: Floats) -> Floats:
    # vecdot runs numpy's own SIMD loop on this thread. BLAS sgemv hands big products to
    # its worker threads, which stall when the cores are busy: on a loaded 2-core machine
    # 100,000 x 384 took ~200 ms that way against ~11 ms here.
    scores: Floats = np.vecdot(matrix, query)
    return scores


def top(ids: Ints, scores: Floats, limit: int) -> list[tuple[int, float]]:
    k = min(limit, len(scores))
    if k <= 0:
        return []
    part = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
    order = part[np.lexsort((ids[part], -scores[part]))]  # ties: lower id first
    return [(int(ids[i]), float(scores[i])) for i in order]

