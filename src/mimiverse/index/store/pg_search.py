"""Search queries of the PostgreSQL store: BM25 over tsvector terms, and pgvector cosine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from psycopg import sql

from mimiverse.errors import CodeIndexError
from mimiverse.index.model import SearchFilter
from mimiverse.index.store import BM25_B, BM25_K1, bm25_idf, glob_regex, split_terms
from mimiverse.index.store.pg_schema import Connection, one, repo_row

MAX_POSITION = 16383  # tsvector positions saturate here
MAX_POSITIONS = 256  # tsvector keeps at most this many positions per lexeme
MAX_LEXEME_BYTES = 2046

# BM25 as FTS5 computes it, over the chunks that contain a selective term; IDFs come in
# as parameters (from `lexicon`), so filters do not change them.
LEXICAL = """
WITH q AS (
    SELECT * FROM unnest(%(terms)s::text[], %(idf)s::float8[]) AS q (lexeme, idf)
), matched AS (
    SELECT c.id, c.ntokens, u.lexeme, cardinality(u.positions) AS tf
    FROM chunks c,
         unnest(ts_filter(setweight(c.terms, 'A', %(terms)s::text[]), '{{a}}')) AS u
    WHERE c.repo = %(repo)s AND c.terms @@ %(query)s::tsquery{filters}
)
SELECT m.id, sum(
    q.idf * m.tf * (%(k1)s + 1)
    / (m.tf + %(k1)s * (1 - %(b)s + %(b)s * m.ntokens / %(avgdl)s))
) AS score
FROM matched m JOIN q USING (lexeme)
GROUP BY m.id ORDER BY score DESC, m.id LIMIT %(limit)s
"""


def quote(lexeme: str) -> str:
    """A lexeme as tsvector/tsquery input reads it back verbatim."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def lexeme_positions(terms: Sequence[str]) -> dict[str, list[int]]:
    """Each term's positions, within what a tsvector can hold."""
    positions: dict[str, list[int]] = {}
    for position, term in enumerate(terms, start=1):
        if len(term.encode()) > MAX_LEXEME_BYTES:
            continue
        seen = positions.setdefault(term, [])
        at = min(position, MAX_POSITION)
        if len(seen) < MAX_POSITIONS and (not seen or seen[-1] != at):
            seen.append(at)
    return positions


def tsvector_literal(positions: dict[str, list[int]]) -> str:
    return " ".join(f"{quote(t)}:{','.join(map(str, p))}" for t, p in positions.items())


def chunk_filters(where: SearchFilter) -> tuple[list[str], dict[str, Any]]:
    """Conditions on the chunk `c` for the filter, with their (only) parameters."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if where.language is not None:
        conditions.append("c.language = %(language)s")
        params["language"] = where.language
    if where.path_glob:
        conditions.append("c.path ~ %(path_re)s")
        params["path_re"] = glob_regex(where.path_glob)
    return conditions, params


class PostgresSearch:
    """Lexical and vector search of one store, on its pooled connections."""

    def __init__(self, connect: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._connect = connect

    def lexical(
        self, repo: int, terms: Sequence[str], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        distinct = [t for t in dict.fromkeys(terms) if t and len(t.encode()) <= MAX_LEXEME_BYTES]
        if not distinct or limit <= 0:
            return []
        conditions, params = chunk_filters(where)
        with self._connect() as conn, conn.transaction():
            df: dict[str, int] = dict(conn.execute(
                "SELECT term, df FROM lexicon WHERE repo = %s AND term = ANY(%s::text[])",
                (repo, distinct),
            ).fetchall())
            chunks, tokens = one(conn.execute(
                "SELECT chunk_count, token_count FROM repos WHERE id = %s", (repo,)
            ))
            selective, common = split_terms(df, chunks)
            if not selective:
                return []
            ranked = selective + common
            params.update(
                repo=repo, terms=ranked, idf=[bm25_idf(chunks, df[t]) for t in ranked],
                query=" | ".join(map(quote, selective)), k1=BM25_K1, b=BM25_B,
                avgdl=max(tokens / max(chunks, 1), 1.0), limit=limit,
            )
            filters = "".join(f" AND {c}" for c in conditions)
            rows = conn.execute(
                sql.SQL(LEXICAL).format(filters=sql.SQL(filters)), params
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def vector(
        self, repo: int, vector: Sequence[float], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        if limit <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        conditions, params = chunk_filters(where)
        join = "".join(
            [" JOIN chunks c ON c.id = e.chunk_id"] + [f" AND {c}" for c in conditions]
        ) if conditions else ""
        params.update(q=query, limit=limit)
        with self._connect() as conn, conn.transaction():
            dim = repo_row(conn, repo)[2]
            if dim is None:
                return []
            if query.shape != (dim,):
                raise CodeIndexError(
                    f"query vector has shape {query.shape}; the index holds {dim}-dimensional"
                    " vectors"
                )
            if not np.any(query):
                return []  # cosine is undefined for a zero vector
            # Iterative scans keep walking the HNSW graph until enough rows pass the filters.
            conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true),"
                " set_config('hnsw.iterative_scan', 'strict_order', true)",
                (str(min(max(limit, 40), 1000)),),
            )
            rows = conn.execute(sql.SQL(
                "SELECT e.chunk_id, 1 - (e.embedding::vector({dim}) <=> %(q)s)"
                " FROM embeddings e{join} WHERE e.repo = {repo}"
                " ORDER BY e.embedding::vector({dim}) <=> %(q)s LIMIT %(limit)s"
            ).format(dim=sql.SQL(str(int(dim))), repo=sql.SQL(str(int(repo))),
                     join=sql.SQL(join)), params).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]
