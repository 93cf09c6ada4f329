"""The PostgreSQL index's schema: migrations, the migrator, the repos row, integrity checks."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from mimiverse.errors import CodeIndexError
from mimiverse.index.store import pending_migrations

Connection = psycopg.Connection[TupleRow]

LOCK_NAMESPACE = 0x4D494D49  # "MIMI": the first key of every advisory lock we take

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE repos (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            root text NOT NULL UNIQUE,
            embedding_model text,
            embedding_dim integer,
            chunk_count bigint NOT NULL DEFAULT 0,
            token_count bigint NOT NULL DEFAULT 0,
            vector_index text
        )""",
        """CREATE TABLE files (
            repo bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
            path text NOT NULL,
            size bigint NOT NULL,
            mtime_ns bigint NOT NULL,
            sha256 text NOT NULL,
            language text,
            PRIMARY KEY (repo, path)
        )""",
        """CREATE TABLE chunks (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            repo bigint NOT NULL,
            path text NOT NULL,
            start_line integer NOT NULL,
            end_line integer NOT NULL,
            symbol text,
            kind text NOT NULL,
            language text,
            text text NOT NULL,
            terms tsvector NOT NULL,
            ntokens integer NOT NULL,
            FOREIGN KEY (repo, path) REFERENCES files (repo, path) ON DELETE CASCADE
        )""",
        "CREATE INDEX chunks_by_file ON chunks (repo, path)",
        "CREATE INDEX chunks_terms ON chunks USING gin (terms)",
        """CREATE TABLE embeddings (
            chunk_id bigint PRIMARY KEY REFERENCES chunks (id) ON DELETE CASCADE,
            repo bigint NOT NULL,
            embedding vector NOT NULL
        )""",
        "CREATE INDEX embeddings_by_repo ON embeddings (repo)",
        # Chunks of the repository containing each term: tells selective terms from common
        # ones and gives BM25 its IDF. Rows that fall to 0 stay (they read as absent).
        """CREATE TABLE lexicon (
            repo bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
            term text NOT NULL,
            df integer NOT NULL,
            PRIMARY KEY (repo, term)
        )""",
    ),
    # Chunks became one per function and method, embedded with a path + symbol header
    # (issue 16): every file is chunked and embedded again (embeddings and the BM25
    # statistics go with the chunks; each repository's HNSW index stays, emptied).
    (
        "TRUNCATE files, chunks, embeddings, lexicon",
        "UPDATE repos SET chunk_count = 0, token_count = 0",
    ),
    # Index jobs as rows, so every replica sees them and picks up interrupted ones
    # (index/store/pg_jobs.py).
    (
        """CREATE TABLE IF NOT EXISTS index_jobs (
            repo bigint PRIMARY KEY REFERENCES repos (id) ON DELETE CASCADE,
            state text NOT NULL,
            again boolean NOT NULL DEFAULT false,
            owner text,
            lease_until timestamptz,
            requested_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            runs integer NOT NULL DEFAULT 0,
            error text,
            embedding_error text,
            report jsonb
        )""",
        "CREATE INDEX IF NOT EXISTS index_jobs_due ON index_jobs (requested_at)"
        " WHERE state IN ('queued', 'indexing', 'embedding')",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# What each invariant breach is, and the query counting its breaches in repository %(r)s.
INTEGRITY_CHECKS: tuple[tuple[str, str], ...] = (
    ("chunks without a file row",
     "SELECT count(*) FROM chunks c WHERE c.repo = %(r)s AND NOT EXISTS"
     " (SELECT 1 FROM files f WHERE f.repo = c.repo AND f.path = c.path)"),
    ("vectors without a chunk of this repository",
     "SELECT count(*) FROM embeddings e WHERE e.repo = %(r)s AND NOT EXISTS"
     " (SELECT 1 FROM chunks c WHERE c.id = e.chunk_id AND c.repo = e.repo)"),
    ("vectors whose dimension is not the recorded one (or no model is recorded)",
     "SELECT count(*) FROM embeddings e JOIN repos r ON r.id = e.repo"
     " WHERE e.repo = %(r)s"
     " AND (r.embedding_dim IS NULL OR vector_dims(e.embedding) <> r.embedding_dim)"),
    ("chunk/token counters that do not match the chunks (BM25 statistics)",
     "SELECT count(*) FROM repos r WHERE r.id = %(r)s AND (r.chunk_count, r.token_count)"
     " <> (SELECT count(*), coalesce(sum(ntokens), 0) FROM chunks WHERE repo = r.id)"),
    ("document frequencies that do not match the chunks (BM25 statistics)",
     "SELECT count(*) FROM (SELECT t, count(*) AS n FROM chunks,"
     " unnest(tsvector_to_array(terms)) AS t WHERE repo = %(r)s GROUP BY t) AS actual"
     " FULL JOIN (SELECT term, df FROM lexicon WHERE repo = %(r)s AND df <> 0) AS l"
     " ON l.term = actual.t WHERE actual.n IS DISTINCT FROM l.df"),
    ("recorded vector index that does not exist",
     "SELECT count(*) FROM repos r WHERE r.id = %(r)s AND r.vector_index IS NOT NULL"
     " AND to_regclass(quote_ident(r.vector_index)) IS NULL"),
)


def one(cursor: psycopg.Cursor[TupleRow]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:  # only for queries that always return a row
        raise CodeIndexError("PostgreSQL returned no row where one was expected")
    return row


def migrate(conn: Connection) -> None:
    """Bring the schema up to SCHEMA_VERSION, one migrator at a time (advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_NAMESPACE,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        version = int(one(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version"))[0])
        for statement in pending_migrations("the PostgreSQL index", version, MIGRATIONS):
            conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))


def repo_row(conn: Connection, repo: int, lock: str = "") -> tuple[Any, ...]:
    """(root, model, dim, vector_index) of the repository, row-locked if `lock` says."""
    row = conn.execute(
        sql.SQL(
            "SELECT root, embedding_model, embedding_dim, vector_index FROM repos"
            " WHERE id = %s {}"
        ).format(sql.SQL(lock)),
        (repo,),
    ).fetchone()
    if row is None:
        raise CodeIndexError(f"no repository with id {repo} in the PostgreSQL index")
    return row
