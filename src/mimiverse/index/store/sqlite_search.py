"""Search queries of the SQLite store: FTS5 BM25 over the selective terms, and exact
cosine over the vectors it holds in memory (sqlite_vectors.py), refreshed per query."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np

from mimiverse.errors import CodeIndexError
from mimiverse.index.model import SearchFilter
from mimiverse.index.store import BM25_B, BM25_K1, bm25_idf, compiled_glob, split_terms
from mimiverse.index.store.sqlite_vectors import Snapshot, VectorCache, similarities, top


def glob_match(glob: str, path: str | None) -> bool:
    """The SQL function `glob_match(glob, path)` the store's connections define."""
    return path is not None and compiled_glob(glob).search(path) is not None


def bm25(terms: Sequence[str], weights: dict[str, float], avgdl: float) -> float:
    """BM25 of one chunk for these terms (weight = IDF), the way FTS5's bm25() adds it."""
    counts = Counter(t for t in terms if t in weights)
    norm = BM25_K1 * (1 - BM25_B + BM25_B * len(terms) / avgdl)
    return sum(w * counts[t] * (BM25_K1 + 1) / (counts[t] + norm)
               for t, w in weights.items() if counts[t])


class SqliteSearch:
    """Lexical and vector search of one store, in its read transactions (`read()`), with
    each repository's vectors held in memory between queries."""

    def __init__(self, read: Callable[[], AbstractContextManager[sqlite3.Connection]]) -> None:
        self._read = read
        self._lock = threading.Lock()  # guards caches and _cache_locks
        self.caches: dict[int, VectorCache] = {}
        self._cache_locks: dict[int, threading.Lock] = {}

    def forget(self) -> None:
        """Drop the vectors held in memory (the store is closing)."""
        with self._lock:
            self.caches.clear()

    def lexical(
        self, repo: int, terms: Sequence[str], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        distinct = list(dict.fromkeys(t for t in terms if t.strip()))
        if not distinct or limit <= 0:
            return []
        with self._read() as con:
            df = dict(con.execute(
                "SELECT term, df FROM term_df WHERE term IN (SELECT value FROM json_each(?))",
                (json.dumps(distinct),),
            ).fetchall())
            chunks, tokens = con.execute(
                "SELECT sum(chunk_count), sum(token_count) FROM repos"
            ).fetchone()
            selective, common = split_terms(df, chunks or 0)
            if not selective:
                return []
            sql = (
                "SELECT c.id, bm25(chunks_fts) AS rank FROM chunks_fts"
                " JOIN chunks c ON c.id = chunks_fts.rowid"
                " WHERE chunks_fts MATCH ? AND c.repo = ?"
            )
            params: list[object] = [
                " OR ".join('"' + t.replace('"', '""') + '"' for t in selective), repo
            ]
            if where.language is not None:
                sql += " AND c.language = ?"
                params.append(where.language)
            if where.path_glob:
                sql += " AND glob_match(?, c.path)"
                params.append(where.path_glob)
            # With common terms, rescore more candidates than asked for: their weight can
            # reorder the tail.
            sql += " ORDER BY rank, c.id LIMIT ?"
            params.append(limit if not common else max(4 * limit, 100))
            # FTS5's bm25() is negative, lower is better: flip it so higher is better.
            hits = {int(r[0]): -float(r[1]) for r in con.execute(sql, params)}
            if common and hits:
                texts = con.execute(
                    "SELECT id, terms FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(hits)),),
                ).fetchall()
                avgdl = max(tokens / chunks, 1.0)
                weights = {t: bm25_idf(chunks, df[t]) for t in common}
                for cid, text in texts:
                    hits[cid] += bm25(text.split(), weights, avgdl)
        ranked = sorted(hits.items(), key=lambda hit: (-hit[1], hit[0]))
        return ranked[:limit]

    def vector(
        self, repo: int, vector: Sequence[float], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        if limit <= 0:
            return []
        loaded = self._vectors(repo)
        if loaded is None:
            return []
        cache, snap = loaded
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (cache.dim,):
            raise CodeIndexError(
                f"query vector has shape {query.shape}; the index holds {cache.dim}-dimensional"
                " vectors"
            )
        norm = float(np.linalg.norm(query))
        if norm == 0.0 or len(snap.ids) == 0:
            return []
        query = query / norm
        valid = snap.alive
        if where.language is not None:
            code = cache.language_code(where.language)
            if code is None:
                return []
            valid = valid & (snap.lang_of == code)
        if where.path_glob:
            valid = valid & cache.path_mask(where.path_glob, snap.files)[snap.file_of]
        rows = np.flatnonzero(valid)
        if len(rows) == len(snap.ids):
            return top(snap.ids, similarities(snap.matrix, query), limit)
        if len(rows) * 3 < len(snap.ids):  # few rows left: gather them, score only those
            return top(snap.ids[rows], similarities(snap.matrix[rows], query), limit)
        return top(snap.ids[rows], similarities(snap.matrix, query)[rows], limit)

    def _vectors(self, repo: int) -> tuple[VectorCache, Snapshot] | None:
        """The repository's vectors, brought up to date with the database first."""
        with self._lock:
            lock = self._cache_locks.setdefault(repo, threading.Lock())
        with lock, self._read() as con:  # one read transaction: a consistent view
            row = con.execute(
                "SELECT vector_seq, tombstone_floor, embedding_dim FROM repos WHERE id = ?",
                (repo,),
            ).fetchone()
            if row is None or row[2] is None:
                return None
            seq, floor, dim = int(row[0]), int(row[1]), int(row[2])
            cache = self.caches.get(repo)
            if cache is None or cache.dim != dim or not floor <= cache.seq <= seq:
                cache = VectorCache(dim, -1)
            if cache.seq < seq:
                if cache.seq >= 0:
                    cache.remove(r[0] for r in con.execute(
                        "SELECT chunk_id FROM vector_tombstones WHERE repo = ? AND seq > ?",
                        (repo, cache.seq),
                    ))
                cache.append(con.execute(
                    "SELECT v.chunk_id, c.path, c.language, v.vector FROM vectors v"
                    " JOIN chunks c ON c.id = v.chunk_id WHERE v.repo = ? AND v.seq > ?",
                    (repo, cache.seq),
                ).fetchall())
                cache.seq = seq
            with self._lock:
                self.caches[repo] = cache
            return cache, cache.snapshot()
