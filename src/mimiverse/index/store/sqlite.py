"""SQLite index store: one file, WAL, FTS5 BM25 for text, numpy for vectors.

Schema (migrated by `PRAGMA user_version`):
- repos, files, chunks as the interface describes; `chunks.terms` holds the chunk's
  pre-tokenised terms (space-joined) and is the content of the external-content FTS5 table
  `chunks_fts`: `replace_files` adds new rows to it with one INSERT ... SELECT, a trigger
  removes deleted ones. The FTS5 tokenizer (`ascii`) only splits what our own tokenizer
  already split and folds nothing, so index-time and query-time terms, and `term_df`'s
  counts of them, are identical (non-ASCII ones too).
- vectors(chunk_id, repo, seq, vector float32 BLOB) and vector_tombstones: every change
  to a repository's vectors takes the next `repos.vector_seq`, so a process holding the
  vectors in memory refreshes incrementally (rows with a newer seq, tombstones newer than
  its own) instead of reloading, and notices other processes' writes.

Lexical search is FTS5's bm25() over the query's selective terms (see `split_terms`):
FTS5 does work for every chunk a term matches, so a term in half the chunks would cost
~100 ms at 100,000 chunks. Common terms add their BM25 weight, computed here the way FTS5
would from `term_df` and the repos' counters, to the best candidates only.

Vector search is exact: a float32 mat-vec over an in-memory, L2-normalised matrix
(100,000 x 384 in ~5-11 ms on one core), with path/language filters as numpy masks.
Connections are per thread (WAL lets readers run beside the one writer); writes take
`BEGIN IMMEDIATE` so two writers queue on the busy timeout instead of deadlocking.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from mimiverse.errors import CodeIndexError, IndexLocked
from mimiverse.index.model import Chunk, FileState, IndexTerms, SearchFilter, StoredChunk
from mimiverse.index.store import Tokenizer, chunk_terms, default_tokenizer
from mimiverse.index.store.base import IndexStore, RepoStats
from mimiverse.index.store.sqlite_changes import JSON_VALUES, Changes
from mimiverse.index.store.sqlite_schema import INTEGRITY_CHECKS, migrate
from mimiverse.index.store.sqlite_search import SqliteSearch, glob_match

# WAL pages an indexing run may leave unchecked (256 MiB of 16 KiB pages; SQLite's usual
# 1000 would checkpoint every ~400 files): see `_deferred_checkpoints`.
RUN_WAL_PAGES = 16384
WAL_RETRY_S = 0.02  # between tries to switch a database another process is writing to WAL

_CHUNK_COLUMNS = "id, path, start_line, end_line, text, language, symbol, kind"


class SqliteStore(IndexStore):
    kind = "sqlite"

    def __init__(
        self, path: Path, *, tokenizer: Tokenizer | None = None, busy_timeout_s: float = 30.0
    ) -> None:
        self.path = path
        self._tokenizer = tokenizer
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards _connections and _users
        # close() waits for statements running in other threads (closing a connection
        # under one crashes the process) and refuses new ones.
        self._idle = threading.Condition(self._lock)
        self._users = 0
        self._closed = False
        self._roots: dict[str, int] = {}
        self._search = SqliteSearch(lambda: self._tx("BEGIN"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CodeIndexError(f"cannot create the index folder {path.parent}: {exc}") from exc
        self._migrate()

    # -- connections and transactions ---------------------------------------------------

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            try:
                # check_same_thread=False only so close() may close every thread's connection;
                # each connection is used by the thread that opened it.
                con = sqlite3.connect(
                    self.path, timeout=self._busy_timeout_s, isolation_level=None,
                    check_same_thread=False,
                )
                # Only a new database takes it (before WAL writes the first page): rows of
                # chunk text and terms are large, and 16 KiB pages write them ~8% faster.
                con.execute("PRAGMA page_size = 16384")
                self._use_wal(con)
                con.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across crashes of us
                con.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
            except sqlite3.Error as exc:
                raise CodeIndexError(f"cannot open the index {self.path}: {exc}") from exc
            con.create_function("glob_match", 2, glob_match, deterministic=True)
            self._local.con = con
            with self._lock:
                self._connections.append(con)
        return con

    def _use_wal(self, con: sqlite3.Connection) -> None:
        """Switch to WAL, waiting out another connection's write. SQLite answers "locked"
        at once here, without its busy wait, while another process holds a write lock on
        a database still in rollback mode: a second worker opening the index while the
        first creates it."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                con.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(WAL_RETRY_S)

    @contextmanager
    def _in_use(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise CodeIndexError(f"the index {self.path} is closed")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if not self._users:
                    self._idle.notify_all()

    @contextmanager
    def _tx(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A transaction (IMMEDIATE for writes, plain BEGIN for a consistent read)."""
        with self._in_use():
            yield from self._transaction(begin)

    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        con = self._con()
        try:
            con.execute(begin)
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CodeIndexError(f"index {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        with self._tx() as con:
            migrate(con, self.path)

    def close(self) -> None:
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: not self._users, timeout=self._busy_timeout_s)
            connections, self._connections = self._connections, []
        self._search.forget()
        for con in connections:
            con.close()
        self._local = threading.local()

    # -- repositories and the writer lock -----------------------------------------------

    def repo_id(self, root: str) -> int:
        known = self._roots.get(root)
        if known is not None:
            return known
        with self._tx("BEGIN") as con:
            row = con.execute("SELECT id FROM repos WHERE root = ?", (root,)).fetchone()
        if row is None:
            with self._tx() as con:
                con.execute("INSERT INTO repos (root) VALUES (?) ON CONFLICT DO NOTHING", (root,))
                row = con.execute("SELECT id FROM repos WHERE root = ?", (root,)).fetchone()
        self._roots[root] = int(row[0])
        return int(row[0])

    def _root(self, con: sqlite3.Connection, repo: int) -> str:
        row = con.execute("SELECT root FROM repos WHERE id = ?", (repo,)).fetchone()
        if row is None:
            raise CodeIndexError(f"no repository with id {repo} in {self.path}")
        return str(row[0])

    @contextmanager
    def writer_lock(self, repo: int, *, wait: bool = True) -> Iterator[None]:
        # flock belongs to the open file, so two stores in one process exclude each other
        # too, and the kernel releases it when a crashed writer's process dies.
        lock_path = self.path.with_name(f"{self.path.name}.writer-{repo}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                with self._tx("BEGIN") as con:
                    root = self._root(con, repo)
                raise IndexLocked(
                    f"another indexing run is writing the index of {root} "
                    f"(lock {lock_path}); try again when it has finished"
                ) from None
            with self._deferred_checkpoints():
                yield
        finally:
            os.close(fd)

    @contextmanager
    def _deferred_checkpoints(self) -> Iterator[None]:
        """While a run writes, its commits leave the WAL to grow (to RUN_WAL_PAGES): the
        checkpoints that copy it into the database, and wait for their fsync, come after
        its files are searchable (on the next commit past the usual size, or at close).
        Spread over the run they cost ~0.1 s per 1,000 files, half of it waiting."""
        con = self._con()  # this thread's: the one the run's writes use
        try:
            with self._in_use():
                (usual,) = con.execute("PRAGMA wal_autocheckpoint").fetchone()
                con.execute(f"PRAGMA wal_autocheckpoint = {RUN_WAL_PAGES}")
        except sqlite3.Error as exc:
            raise CodeIndexError(f"index {self.path}: {exc}") from exc
        try:
            yield
        finally:
            # A closed store: the setting went with it.
            with suppress(sqlite3.Error, CodeIndexError), self._in_use():
                con.execute(f"PRAGMA wal_autocheckpoint = {int(usual)}")

    # -- files and chunks ---------------------------------------------------------------

    def file_states(self, repo: int) -> dict[str, FileState]:
        with self._tx("BEGIN") as con:
            rows = con.execute(
                "SELECT path, size, mtime_ns, sha256, language FROM files WHERE repo = ?", (repo,)
            ).fetchall()
        return {r[0]: FileState(r[0], r[1], r[2], r[3], r[4]) for r in rows}

    def replace_files(self, repo: int, files: Sequence[tuple[FileState, Sequence[Chunk]]]) -> None:
        latest = {state.path: (state, chunks) for state, chunks in files}  # the last one wins
        tokenize = self.tokenizer()
        rows: list[tuple[object, ...]] = []
        terms: list[IndexTerms] = []
        for state, chunks in latest.values():  # tokenise before the transaction: keep it short
            for c in chunks:
                if c.path != state.path:
                    raise ValueError(f"chunk of {c.path!r} given with file {state.path!r}")
                terms.append(chunk_terms(c, tokenize))
                rows.append((repo, state.path, c.start_line, c.end_line, c.symbol, c.kind,
                             c.language, c.text, terms[-1].joined))
        with self._tx() as con:
            changes = Changes(con, repo)
            changes.add_terms(terms)
            # Whole-batch statements: per-file ones cost more than the rows at 100 files.
            changes.drop_files(list(latest))
            con.executemany(
                "INSERT INTO files (repo, path, size, mtime_ns, sha256, language)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repo, path) DO UPDATE SET"
                " size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " sha256 = excluded.sha256, language = excluded.language",
                [(repo, s.path, s.size, s.mtime_ns, s.sha256, s.language)
                 for s, _ in latest.values()],
            )
            # Ids only grow (AUTOINCREMENT): the new rows are the ones above the old maximum.
            (last,) = con.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()
            con.executemany(
                "INSERT INTO chunks (repo, path, start_line, end_line, symbol, kind,"
                " language, text, terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.execute(
                "INSERT INTO chunks_fts (rowid, terms) SELECT id, terms FROM chunks WHERE id > ?",
                (last,),
            )
            changes.commit()

    def refresh_file_states(self, repo: int, states: Sequence[FileState]) -> None:
        with self._tx() as con:
            con.executemany(
                "UPDATE files SET size = ?, mtime_ns = ? WHERE repo = ? AND path = ?"
                " AND sha256 = ?",
                [(s.size, s.mtime_ns, repo, s.path, s.sha256) for s in states],
            )

    def delete_files(self, repo: int, paths: Sequence[str]) -> None:
        with self._tx() as con:
            changes = Changes(con, repo)
            changes.drop_files(paths)
            con.execute(
                f"DELETE FROM files WHERE repo = ? AND path IN {JSON_VALUES}",
                (repo, json.dumps(list(paths))),
            )
            changes.commit()

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        with self._tx("BEGIN") as con:
            rows = con.execute(
                f"SELECT {_CHUNK_COLUMNS} FROM chunks"
                " WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps([int(i) for i in ids]),),
            ).fetchall()
        return {r[0]: StoredChunk(*r) for r in rows}

    # -- embeddings ---------------------------------------------------------------------

    def set_embedding_model(self, repo: int, model: str, dim: int) -> bool:
        if dim <= 0:
            raise ValueError(f"embedding dimension must be positive, got {dim}")
        with self._tx() as con:
            self._root(con, repo)
            old_model, old_dim, seq = con.execute(
                "SELECT embedding_model, embedding_dim, vector_seq FROM repos WHERE id = ?", (repo,)
            ).fetchone()
            if (old_model, old_dim) == (model, dim):
                return False
            # A reset, not a tombstone per vector: readers behind the floor reload.
            con.execute("DELETE FROM vectors WHERE repo = ?", (repo,))
            con.execute("DELETE FROM vector_tombstones WHERE repo = ?", (repo,))
            con.execute(
                "UPDATE repos SET embedding_model = ?, embedding_dim = ?, vector_seq = ?,"
                " tombstone_floor = ? WHERE id = ?",
                (model, dim, seq + 1, seq + 1, repo),
            )
        return old_model is not None

    def pending_embeddings(self, repo: int, limit: int) -> list[tuple[int, str]]:
        with self._tx("BEGIN") as con:
            rows = con.execute(
                "SELECT c.id, c.text FROM chunks c INDEXED BY chunks_by_repo WHERE c.repo = ?"
                " AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.chunk_id = c.id)"
                " ORDER BY c.id LIMIT ?",
                (repo, max(limit, 0)),
            ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def store_embeddings(self, repo: int, vectors: Sequence[tuple[int, Sequence[float]]]) -> None:
        if not vectors:
            return
        with self._tx() as con:
            self._root(con, repo)
            (dim,) = con.execute("SELECT embedding_dim FROM repos WHERE id = ?", (repo,)).fetchone()
            if dim is None:
                raise CodeIndexError("set_embedding_model before storing embeddings")
            blobs: list[tuple[int, bytes]] = []
            for chunk_id, vector in vectors:
                array = np.asarray(vector, dtype=np.float32)
                if array.shape != (dim,):
                    raise CodeIndexError(
                        f"vector for chunk {chunk_id} has shape {array.shape}; the index "
                        f"holds {dim}-dimensional vectors"
                    )
                blobs.append((int(chunk_id), array.tobytes()))
            changes = Changes(con, repo)
            changes.drop_ids([cid for cid, _ in blobs])  # re-stored vectors replace old ones
            # Chunks deleted meanwhile are skipped: the INSERT selects only existing ones.
            con.executemany(
                "INSERT INTO vectors (chunk_id, repo, seq, vector)"
                " SELECT id, repo, ?, ? FROM chunks WHERE id = ? AND repo = ?",
                [(changes.seq, blob, cid, repo) for cid, blob in blobs],
            )
            changes.vectors_touched = True
            changes.commit()

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
        with self._tx("BEGIN") as con:
            self._root(con, repo)
            files, chunks, vectors, model, dim = con.execute(
                "SELECT (SELECT count(*) FROM files WHERE repo = :r),"
                " (SELECT count(*) FROM chunks WHERE repo = :r),"
                " (SELECT count(*) FROM vectors WHERE repo = :r),"
                " embedding_model, embedding_dim FROM repos WHERE id = :r",
                {"r": repo},
            ).fetchone()
        return RepoStats(files, chunks, chunks - vectors, model, dim)

    def check_integrity(self, repo: int) -> list[str]:
        problems: list[str] = []
        with self._in_use():
            self._con().execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_vocab"
                " USING fts5vocab(main, chunks_fts, row)"
            )
        with self._tx("BEGIN") as con:
            self._root(con, repo)
            for what, sql in INTEGRITY_CHECKS:
                (count,) = con.execute(sql, {"r": repo}).fetchone()
                if count:
                    problems.append(f"{count} {what}")
        try:
            # Compares the FTS5 index with the chunks it was built from (all repositories).
            with self._tx() as con:
                con.execute(
                    "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)"
                )
        except CodeIndexError as exc:
            problems.append(f"the full-text index does not match the chunks: {exc.__cause__}")
        return problems

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = default_tokenizer()
        return self._tokenizer

