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
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from mimiverse.errors import CodeIndexError, IndexLocked
from mimiverse.index.model import Chunk, FileState, SearchFilter, StoredChunk
from mimiverse.index.store import (
    BM25_B,
    BM25_K1,
    Tokenizer,
    bm25_idf,
    chunk_terms,
    default_tokenizer,
    glob_regex,
    split_terms,
)
from mimiverse.index.store.base import IndexStore, RepoStats
from mimiverse.index.store.pg_jobs import PostgresJobs

Connection = psycopg.Connection[TupleRow]

LOCK_NAMESPACE = 0x4D494D49  # "MIMI": the first key of every advisory lock we take
MAX_POSITION = 16383  # tsvector positions saturate here
MAX_POSITIONS = 256  # tsvector keeps at most this many positions per lexeme
MAX_LEXEME_BYTES = 2046
HNSW_MAX_DIM = 2000  # pgvector's limit for indexing `vector`

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
SCHEMA_VERSION = len(_MIGRATIONS)

# BM25 as FTS5 computes it, over the chunks that contain a selective term; IDFs come in
# as parameters (from `lexicon`), so filters do not change them.
_LEXICAL = """
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


def _quote(lexeme: str) -> str:
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
    return " ".join(f"{_quote(t)}:{','.join(map(str, p))}" for t, p in positions.items())


def _one(cursor: psycopg.Cursor[TupleRow]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:  # only for queries that always return a row
        raise CodeIndexError("PostgreSQL returned no row where one was expected")
    return row


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
                self._migrate(conn)
        except psycopg.OperationalError as exc:
            raise CodeIndexError(f"cannot use the PostgreSQL index: {exc}") from exc
        # Autocommit: every multi-statement use opens an explicit transaction.
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url, min_size=min_size, max_size=max_size, kwargs={"autocommit": True},
            configure=register_vector, open=True, name="mimiverse-index",
        )

    @staticmethod
    def _migrate(conn: Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_NAMESPACE,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            version = int(
                _one(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version"))[0]
            )
            if version > SCHEMA_VERSION:
                raise CodeIndexError(
                    f"the PostgreSQL index has schema version {version}, newer than this "
                    f"mimiverse understands ({SCHEMA_VERSION}); upgrade mimiverse"
                )
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))

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
                row = _one(conn.execute("SELECT id FROM repos WHERE root = %s", (root,)))
        return int(row[0])

    @staticmethod
    def _repo(conn: Connection, repo: int, lock: str = "") -> tuple[Any, ...]:
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
            elif not _one(conn.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", key))[0]:
                root = self._repo(conn, repo)[0]
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
            self._repo(conn, repo, "FOR NO KEY UPDATE")
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
        row = _one(conn.execute(
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
            self._repo(conn, repo, "FOR NO KEY UPDATE")
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
            _, old_model, old_dim, index = self._repo(conn, repo, "FOR UPDATE")
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
                dim = self._repo(conn, repo, "FOR SHARE")[2]
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
        _, _, dim, index = self._repo(conn, repo)
        if index is not None or dim is None or dim > HNSW_MAX_DIM:
            return
        enough = _one(conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE repo = %s LIMIT %s) AS e",
            (repo, self._hnsw_min_rows),
        ))[0]
        if enough < self._hnsw_min_rows:
            return
        name = f"embeddings_hnsw_{int(repo)}"
        with conn.transaction():
            _, _, dim, index = self._repo(conn, repo, "FOR UPDATE")  # one builder at a time
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
        distinct = [t for t in dict.fromkeys(terms) if t and len(t.encode()) <= MAX_LEXEME_BYTES]
        if not distinct or limit <= 0:
            return []
        conditions, params = self._filters(where)
        with self._conn() as conn, conn.transaction():
            df = dict(conn.execute(
                "SELECT term, df FROM lexicon WHERE repo = %s AND term = ANY(%s::text[])",
                (repo, distinct),
            ).fetchall())
            chunks, tokens = _one(conn.execute(
                "SELECT chunk_count, token_count FROM repos WHERE id = %s", (repo,)
            ))
            selective, common = split_terms(df, chunks)
            if not selective:
                return []
            ranked = selective + common
            params.update(
                repo=repo, terms=ranked, idf=[bm25_idf(chunks, df[t]) for t in ranked],
                query=" | ".join(map(_quote, selective)), k1=BM25_K1, b=BM25_B,
                avgdl=max(tokens / max(chunks, 1), 1.0), limit=limit,
            )
            filters = "".join(f" AND {c}" for c in conditions)
            rows = conn.execute(
                sql.SQL(_LEXICAL).format(filters=sql.SQL(filters)), params
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def search_vector(
        self, repo: int, vector: Sequence[float], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        if limit <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        conditions, params = self._filters(where)
        join = "".join(
            [" JOIN chunks c ON c.id = e.chunk_id"] + [f" AND {c}" for c in conditions]
        ) if conditions else ""
        params.update(q=query, limit=limit)
        with self._conn() as conn, conn.transaction():
            dim = self._repo(conn, repo)[2]
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

    @staticmethod
    def _filters(where: SearchFilter) -> tuple[list[str], dict[str, Any]]:
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

    # -- bookkeeping --------------------------------------------------------------------

    def stats(self, repo: int) -> RepoStats:
        with self._conn() as conn:
            _, model, dim, _ = self._repo(conn, repo)
            files, chunks, vectors = _one(conn.execute(
                "SELECT (SELECT count(*) FROM files WHERE repo = %(r)s),"
                " (SELECT count(*) FROM chunks WHERE repo = %(r)s),"
                " (SELECT count(*) FROM embeddings WHERE repo = %(r)s)",
                {"r": repo},
            ))
        return RepoStats(int(files), int(chunks), int(chunks - vectors), model, dim)

    def check_integrity(self, repo: int) -> list[str]:
        checks = (
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
        problems: list[str] = []
        with self._conn() as conn, conn.transaction():
            self._repo(conn, repo)
            for what, query in checks:
                count = _one(conn.execute(query, {"r": repo}))[0]
                if count:
                    problems.append(f"{count} {what}")
        return problems
