"""The SQLite index's schema: the migrations that build it (`PRAGMA user_version`) and
the invariants `check_integrity` counts the breaches of."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mimiverse.index.store import pending_migrations

# The full-text index holds our tokenizer's terms exactly as `term_df` counts them: only
# the spaces between them split. The `ascii` tokenizer folds nothing but A-Z (which our
# terms never hold) and takes every non-ASCII character as part of a token; `_` (and `$`)
# are letters here, as in identifiers. (unicode61, used before, folded `µ` into `μ` and
# final `ς` into `σ` behind our back, so its terms and `term_df` disagreed.)
FTS_TOKENIZER = "ascii tokenchars '_$'"
_FIRST_FTS_TOKENIZER = "unicode61 remove_diacritics 0 tokenchars '_$'"  # schema 1 to 3

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE repos (
            id INTEGER PRIMARY KEY,
            root TEXT NOT NULL UNIQUE,
            embedding_model TEXT,
            embedding_dim INTEGER,
            vector_seq INTEGER NOT NULL DEFAULT 0,
            tombstone_floor INTEGER NOT NULL DEFAULT 0,
            chunk_count INTEGER NOT NULL DEFAULT 0,
            token_count INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE files (
            repo INTEGER NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            language TEXT,
            PRIMARY KEY (repo, path)
        ) WITHOUT ROWID""",
        # AUTOINCREMENT: ids are never reused, so a stale id never names another chunk.
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            repo INTEGER NOT NULL,
            path TEXT NOT NULL,
            start_line INTEGER NOT NULL,
            end_line INTEGER NOT NULL,
            symbol TEXT,
            kind TEXT NOT NULL,
            language TEXT,
            text TEXT NOT NULL,
            terms TEXT NOT NULL
        )""",
        "CREATE INDEX chunks_by_file ON chunks (repo, path)",
        # Chunks containing each term, over all repositories as FTS5's bm25() counts them:
        # looked up per query to tell selective terms from common ones.
        "CREATE TABLE term_df (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE INDEX chunks_by_repo ON chunks (repo)",  # rowid order: pending_embeddings
        f"""CREATE VIRTUAL TABLE chunks_fts USING fts5(
            terms, content='chunks', content_rowid='id', tokenize="{_FIRST_FTS_TOKENIZER}"
        )""",
        """CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts (rowid, terms) VALUES (new.id, new.terms);
        END""",
        """CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, terms) VALUES ('delete', old.id, old.terms);
        END""",
        """CREATE TABLE vectors (
            chunk_id INTEGER PRIMARY KEY,
            repo INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            vector BLOB NOT NULL
        )""",
        "CREATE INDEX vectors_by_seq ON vectors (repo, seq)",
        """CREATE TABLE vector_tombstones (
            repo INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            chunk_id INTEGER NOT NULL
        )""",
        "CREATE INDEX vector_tombstones_by_seq ON vector_tombstones (repo, seq)",
    ),
    # An insert trigger makes every row's INSERT a statement with a savepoint, and FTS5
    # writes its pending terms to disk at each savepoint: tiny segments, merged over and
    # over (half the cost of indexing). Rows are added by one INSERT ... SELECT instead.
    ("DROP TRIGGER chunks_fts_insert",),
    # Chunks became one per function and method, embedded with a path + symbol header
    # (issue 16): every file is chunked and embedded again. The delete trigger would
    # remove each row from the full-text index one by one; 'delete-all' does it at once.
    (
        "DROP TRIGGER chunks_fts_delete",
        "DELETE FROM vectors",
        "DELETE FROM vector_tombstones",
        "DELETE FROM chunks",
        "INSERT INTO chunks_fts (chunks_fts) VALUES ('delete-all')",
        "DELETE FROM term_df",
        "DELETE FROM files",
        """CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, terms) VALUES ('delete', old.id, old.terms);
        END""",
        # Readers holding vectors in memory reload them (behind the tombstone floor).
        "UPDATE repos SET chunk_count = 0, token_count = 0, vector_seq = vector_seq + 1,"
        " tombstone_floor = vector_seq + 1",
    ),
    # The full-text index's own tokenizer folded some non-ASCII terms (see FTS_TOKENIZER):
    # rebuilt from the stored terms, which (and so `term_df`) stay as they are.
    (
        "DROP TRIGGER chunks_fts_delete",
        "DROP TABLE chunks_fts",
        f"""CREATE VIRTUAL TABLE chunks_fts USING fts5(
            terms, content='chunks', content_rowid='id', tokenize="{FTS_TOKENIZER}"
        )""",
        "INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild')",
        """CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, terms) VALUES ('delete', old.id, old.terms);
        END""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# What must hold between the tables (`check_integrity`): (what is wrong, a count of it).
INTEGRITY_CHECKS: tuple[tuple[str, str], ...] = (
    ("chunks without a file row",
     "SELECT count(*) FROM chunks c WHERE c.repo = :r AND NOT EXISTS"
     " (SELECT 1 FROM files f WHERE f.repo = c.repo AND f.path = c.path)"),
    ("vectors without a chunk of this repository",
     "SELECT count(*) FROM vectors v WHERE v.repo = :r AND NOT EXISTS"
     " (SELECT 1 FROM chunks c WHERE c.id = v.chunk_id AND c.repo = v.repo)"),
    ("vectors whose size is not the recorded dimension (or no model is recorded)",
     "SELECT count(*) FROM vectors v JOIN repos r ON r.id = v.repo WHERE v.repo = :r"
     " AND (r.embedding_dim IS NULL OR length(v.vector) != 4 * r.embedding_dim)"),
    ("vectors newer than the repository's vector generation",
     "SELECT count(*) FROM vectors v JOIN repos r ON r.id = v.repo WHERE v.repo = :r"
     " AND v.seq > r.vector_seq"),
    ("chunk/token counters that do not match the chunks (BM25 statistics)",
     "SELECT count(*) FROM repos r WHERE r.id = :r AND (r.chunk_count, r.token_count)"
     " IS NOT (SELECT count(*), coalesce(sum(length(terms)"
     " - length(replace(terms, ' ', '')) + (terms != '')), 0)"
     " FROM chunks WHERE repo = r.id)"),
    ("document frequencies that do not match the full-text index (all repositories)",
     "SELECT count(*) FROM temp.chunks_vocab v FULL JOIN term_df d ON d.term = v.term"
     " WHERE v.doc IS NOT d.df"),
)


def migrate(con: sqlite3.Connection, path: Path) -> None:
    """Bring the schema of the index at `path` up to SCHEMA_VERSION (in the caller's
    write transaction)."""
    version = int(con.execute("PRAGMA user_version").fetchone()[0])
    for statement in pending_migrations(f"the index {path}", version, MIGRATIONS):
        con.execute(statement)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
