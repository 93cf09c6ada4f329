"""PostgreSQL + pgvector index store: several repositories in one database, for a team.

Schema (migrated under `schema_version`, one migrator at a time by an advisory lock):
- repos(id, root UNIQUE, embedding model/dim, chunk_count, token_count, vector_index);
  the two counters are kept in the write transactions and feed BM25 (N, avgdl).
- files(repo, path) and chunks(id, repo, path, ..., terms tsvector, ntokens), with a GIN
  index on `terms`. `terms` is written as a tsvector literal from our own tokenizer's
  output (lexemes with positions), never parsed by a text search config, so index-time
  and query-time terms are identical (the 'simple' parser would split `parse_file`).
- index_jobs(repo, state, owner, lease_until, ...): the latest index job of each
  repository (index/store/pg_jobs.py).
- embeddings(chunk_id, repo, embedding vector): an untyped `vector` column, since each
  repository has its own model and dimension. Its HNSW index is per repository, partial
  and on an expression, as pgvector documents for mixed dimensions:
      CREATE INDEX ... USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE repo = 7
  It is built once the repository has `hnsw_min_rows` vectors (below that an exact scan
  is fast and exact); later vectors go into it as they come. Queries name the repository
  and dimension as literals so the planner can match the partial index.

Ranking: PostgreSQL has no BM25 (ts_rank/ts_rank_cd ignore how rare a term is), so
`search_lexical` computes FTS5's BM25 in SQL (k1 = 1.2, b = 0.75): term frequencies from
the stored positions, IDF from `lexicon` (chunks per term, kept in the write
transactions) and the repos' counters. The GIN index selects the chunks that contain a
selective term (see `split_terms`); common terms add their weight to those, exactly.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool

from mimiverse.errors import CodeIndexError, IndexLocked
from mimiverse.index.model import Chunk, FileState, SearchFilter, StoredChunk
from mimiverse.index.store import Tokenizer, chunk_terms, default_tokenizer
from mimiverse.index.store.base import IndexStore, RepoStats
from mimiverse.index.store.pg_jobs import PostgresJobs
from mimiverse.index.store.pg_schema import (
    INTEGRITY_CHECKS,
    LOCK_NAMESPACE,
    SCHEMA_VERSION,
    Connection,
    migrate,
    one,
    repo_row,
)
from mimiverse.index.store.pg_search import PostgresSearch, lexeme_positions, tsvector_literal

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

HNSW_MAX_DIM = 2000  # pgvector's limit for indexing `vector`


class PostgresStore(IndexStore):
    kind = "postgres"

    def __init__(
        self,
        url: str,
        *,
        tokenizer: Tokenizer | None = None,
        min_size: int = 1,
        max_size: int = 8,
        hnsw_min_rows: int = 10_000,
        index_build_memory: str = "512MB",
    ) -> None:
        self._url = url
        self._tokenizer = tokenizer
        self._hnsw_min_rows = hnsw_min_rows
        self._index_build_memory = index_build_memory
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
        except psycopg.OperationalError as exc:
            raise CodeIndexError(f"cannot use the PostgreSQL index: {exc}") from exc
        # Autocommit: every multi-statement use opens an explicit transaction.
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url, min_size=min_size, max_size=max_size, kwargs={"autocommit": True},
            configure=register_vector, open=True, name="mimiverse-index",
        )
        self._search = PostgresSearch(self._conn)


    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        """A pooled connection; lost connections and pool timeouts become ours."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise CodeIndexError(f"PostgreSQL index: {exc}") from exc

    def close(self) -> None:
        self._pool.close()

    def jobs(self) -> PostgresJobs:
        """The repositories' index jobs, on this store's connections."""
        return PostgresJobs(self._conn)

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = default_tokenizer()
        return self._tokenizer

    # -- repositories and the writer lock -----------------------------------------------

    def repo_id(self, root: str) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT id FROM repos WHERE root = %s", (root,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO repos (root) VALUES (%s) ON CONFLICT (root) DO NOTHING", (root,)
                )
                row = one(conn.execute("SELECT id FROM repos WHERE root = %s", (root,)))
        return int(row[0])

    @contextmanager
    def writer_lock(self, repo: int, *, wait: bool = True) -> Iterator[None]:
        # A session lock on a connection of its own: it lasts exactly as long as the
        # `with`, and the server drops it if this process dies.
        try:
            conn = psycopg.connect(self._url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise CodeIndexError(f"cannot use the PostgreSQL index: {exc}") from exc
        key = (LOCK_NAMESPACE, repo)
        held = False
        try:
            if wait:
                conn.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", key)
            elif not one(conn.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", key))[0]:
                root = repo_row(conn, repo)[0]
                raise IndexLocked(
                    f"another indexing run is writing the index of {root}; "
                    "try again when it has finished"
                )
            held = True
            yield
        finally:
            # Unlock before closing: the server ends a closed session in its own time, so
            # a lock left to the disconnect could still refuse the next run for a moment.
            if held and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", key)
            conn.close()

    # -- files and chunks ---------------------------------------------------------------

    def file_states(self, repo: int) -> dict[str, FileState]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT path, size, mtime_ns, sha256, language FROM files WHERE repo = %s",
                (repo,),
            ).fetchall()
        return {r[0]: FileState(r[0], r[1], r[2], r[3], r[4]) for r in rows}

    def replace_files(self, repo: int, files: Sequence[tuple[FileState, Sequence[Chunk]]]) -> None:
        latest = {state.path: (state, chunks) for state, chunks in files}  # the last one wins
        tokenize = self.tokenizer()
        rows: list[tuple[object, ...]] = []
        tokens = 0
        df: Counter[str] = Counter()
        for state, chunks in latest.values():  # tokenise before the transaction
            for c in chunks:
                if c.path != state.path:
                    raise ValueError(f"chunk of {c.path!r} given with file {state.path!r}")
                terms = chunk_terms(c, tokenize)
                positions = lexeme_positions(terms.joined.split())
                tokens += terms.total
                df.update(positions.keys())
                # PostgreSQL text cannot hold NUL; the walker skips binary files anyway.
                rows.append((repo, c.path, c.start_line, c.end_line, c.symbol, c.kind,
                             c.language, c.text.replace("\x00", "\ufffd"),
                             tsvector_literal(positions), terms.total))
        with self._conn() as conn, conn.transaction():
            repo_row(conn, repo, "FOR NO KEY UPDATE")
            gone, gone_tokens = self._drop_chunks(conn, repo, list(latest))
            conn.execute(
                "INSERT INTO lexicon (repo, term, df)"
                " SELECT %s, t, n FROM unnest(%s::text[], %s::int[]) AS u (t, n)"
                " ON CONFLICT (repo, term) DO UPDATE SET df = lexicon.df + EXCLUDED.df",
                (repo, list(df), list(df.values())),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO files (repo, path, size, mtime_ns, sha256, language)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (repo, path) DO UPDATE SET"
                    " size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns,"
                    " sha256 = EXCLUDED.sha256, language = EXCLUDED.language",
                    [(repo, s.path, s.size, s.mtime_ns, s.sha256, s.language)
                     for s, _ in latest.values()],
                )
                with cur.copy(
                    "COPY chunks (repo, path, start_line, end_line, symbol, kind, language,"
                    " text, terms, ntokens) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
            conn.execute(
                "UPDATE repos SET chunk_count = chunk_count + %s,"
                " token_count = token_count + %s WHERE id = %s",
                (len(rows) - gone, tokens - gone_tokens, repo),
            )

    @staticmethod
    def _drop_chunks(conn: Connection, repo: int, paths: list[str]) -> tuple[int, int]:
        """Delete these files' chunks (their vectors cascade); (chunks, tokens) removed."""
        row = one(conn.execute(
            "WITH gone AS (DELETE FROM chunks WHERE repo = %(r)s AND path = ANY(%(p)s::text[])"
            " RETURNING ntokens, terms),"
            " lex AS (SELECT t, count(*) AS n FROM gone, unnest(tsvector_to_array(gone.terms))"
            " AS t GROUP BY t),"
            " counted AS (UPDATE lexicon l SET df = l.df - lex.n FROM lex"
            " WHERE l.repo = %(r)s AND l.term = lex.t)"
            " SELECT count(*), coalesce(sum(ntokens), 0) FROM gone",
            {"r": repo, "p": paths},
        ))
        return int(row[0]), int(row[1])

    def refresh_file_states(self, repo: int, states: Sequence[FileState]) -> None:
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "UPDATE files SET size = %s, mtime_ns = %s WHERE repo = %s AND path = %s"
                " AND sha256 = %s",
                [(s.size, s.mtime_ns, repo, s.path, s.sha256) for s in states],
            )

    def delete_files(self, repo: int, paths: Sequence[str]) -> None:
        with self._conn() as conn, conn.transaction():
            repo_row(conn, repo, "FOR NO KEY UPDATE")
            gone, gone_tokens = self._drop_chunks(conn, repo, list(paths))
            conn.execute(
                "DELETE FROM files WHERE repo = %s AND path = ANY(%s::text[])", (repo, list(paths))
            )
            conn.execute(
                "UPDATE repos SET chunk_count = chunk_count - %s,"
                " token_count = token_count - %s WHERE id = %s",
                (gone, gone_tokens, repo),
            )

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, path, start_line, end_line, text, language, symbol, kind"
                " FROM chunks WHERE id = ANY(%s::bigint[])",
                ([int(i) for i in ids],),
            ).fetchall()
        return {r[0]: StoredChunk(*r) for r in rows}

    # -- embeddings ---------------------------------------------------------------------

    def set_embedding_model(self, repo: int, model: str, dim: int) -> bool:
        if dim <= 0:
            raise ValueError(f"embedding dimension must be positive, got {dim}")
        with self._conn() as conn, conn.transaction():
            _, old_model, old_dim, index = repo_row(conn, repo, "FOR UPDATE")
            if (old_model, old_dim) == (model, dim):
                return False
            if index is not None:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index)))
            conn.execute("DELETE FROM embeddings WHERE repo = %s", (repo,))
            conn.execute(
                "UPDATE repos SET embedding_model = %s, embedding_dim = %s, vector_index = NULL"
                " WHERE id = %s",
                (model, dim, repo),
            )
        return old_model is not None

    def pending_embeddings(self, repo: int, limit: int) -> list[tuple[int, str]]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT c.id, c.text FROM chunks c WHERE c.repo = %s AND NOT EXISTS"
                " (SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id) ORDER BY c.id LIMIT %s",
                (repo, max(limit, 0)),
            ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def store_embeddings(self, repo: int, vectors: Sequence[tuple[int, Sequence[float]]]) -> None:
        if not vectors:
            return
        latest = {int(cid): np.asarray(v, dtype=np.float32) for cid, v in vectors}
        with self._conn() as conn:
            with conn.transaction():
                # FOR SHARE: a concurrent model change cannot slip between check and insert.
                dim = repo_row(conn, repo, "FOR SHARE")[2]
                if dim is None:
                    raise CodeIndexError("set_embedding_model before storing embeddings")
                for cid, array in latest.items():
                    if array.shape != (dim,):
                        raise CodeIndexError(
                            f"vector for chunk {cid} has shape {array.shape}; the index "
                            f"holds {dim}-dimensional vectors"
                        )
                with conn.cursor() as cur:
                    # Chunks deleted meanwhile are skipped: the INSERT selects only existing ones.
                    cur.executemany(
                        "INSERT INTO embeddings (chunk_id, repo, embedding)"
                        " SELECT id, repo, %s FROM chunks WHERE id = %s AND repo = %s"
                        " ON CONFLICT (chunk_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                        [(array, cid, repo) for cid, array in latest.items()],
                    )
            self._build_index(conn, repo)

    def _build_index(self, conn: Connection, repo: int) -> None:
        """Build the repository's HNSW index once it has enough vectors to need one."""
        _, _, dim, index = repo_row(conn, repo)
        if index is not None or dim is None or dim > HNSW_MAX_DIM:
            return
        enough = one(conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE repo = %s LIMIT %s) AS e",
            (repo, self._hnsw_min_rows),
        ))[0]
        if enough < self._hnsw_min_rows:
            return
        name = f"embeddings_hnsw_{int(repo)}"
        with conn.transaction():
            _, _, dim, index = repo_row(conn, repo, "FOR UPDATE")  # one builder at a time
            if index is not None or dim is None:
                return
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)", (self._index_build_memory,)
            )
            conn.execute(sql.SQL(
                "CREATE INDEX IF NOT EXISTS {name} ON embeddings USING hnsw"
                " ((embedding::vector({dim})) vector_cosine_ops) WHERE repo = {repo}"
            ).format(name=sql.Identifier(name), dim=sql.SQL(str(int(dim))),
                     repo=sql.SQL(str(int(repo)))))
            conn.execute("UPDATE repos SET vector_index = %s WHERE id = %s", (name, repo))
        # Fresh statistics, or the planner may still think the repository is small and
        # prefer an exact sort over the new index.
        conn.execute("ANALYZE chunks, embeddings")

    # -- search -------------------------------------------------------------------------

    def search_lexical(
        self, repo: int, terms: Sequence[str], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        return self._search.lexical(repo, terms, limit, where)

    def search_vector(
        self, repo: int, vector: Sequence[float], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        return self._search.vector(repo, vector, limit, where)

    # -- bookkeeping --------------------------------------------------------------------

    def stats(self, repo: int) -> RepoStats:
        with self._conn() as conn:
            _, model, dim, _ = repo_row(conn, repo)
            files, chunks, vectors = one(conn.execute(
                "SELECT (SELECT count(*) FROM files WHERE repo = %(r)s),"
                " (SELECT count(*) FROM chunks WHERE repo = %(r)s),"
                " (SELECT count(*) FROM embeddings WHERE repo = %(r)s)",
                {"r": repo},
            ))
        return RepoStats(int(files), int(chunks), int(chunks - vectors), model, dim)

    def check_integrity(self, repo: int) -> list[str]:
        problems: list[str] = []
        with self._conn() as conn, conn.transaction():
            repo_row(conn, repo)
            for what, query in INTEGRITY_CHECKS:
                count = one(conn.execute(query, {"r": repo}))[0]
                if count:
                    problems.append(f"{count} {what}")
        return problems
