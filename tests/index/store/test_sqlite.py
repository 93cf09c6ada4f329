"""SQLite-only behaviour: the in-memory vector cache, crashes and locks across processes.

The child processes run this module: `python -m tests.index.store.test_sqlite MODE DB`.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mimiverse.errors import IndexLocked
from mimiverse.index.model import Chunk, FileState, SearchFilter
from mimiverse.index.store import sqlite as sqlite_module
from mimiverse.index.store import sqlite_changes, sqlite_schema
from mimiverse.index.store.sqlite import SqliteStore
from mimiverse.index.tokenize import tokens

ROOT = "/repos/crash"
FILES = 20
CHUNKS_PER_FILE = 5
REPO_ROOT = Path(__file__).resolve().parents[3]


def _generation(store: SqliteStore, repo: int, gen: int) -> None:
    """Every file rewritten as generation `gen`, in one transaction, then embedded."""
    store.replace_files(repo, [
        (FileState(f"f{i}.py", gen, gen, f"gen-{gen}", "python"),
         [Chunk(f"f{i}.py", k, k, f"generation {gen} file {i} chunk {k}", "python")
          for k in range(CHUNKS_PER_FILE)])
        for i in range(FILES)
    ])
    pending = store.pending_embeddings(repo, FILES * CHUNKS_PER_FILE)
    store.store_embeddings(repo, [(cid, [float(gen), 1.0, 0.5]) for cid, _ in pending])


def _child(mode: str, db: Path) -> None:
    store = SqliteStore(db, tokenizer=tokens)
    repo = store.repo_id(ROOT)
    if mode == "hold-lock":
        with store.writer_lock(repo):
            print("locked", flush=True)
            sys.stdin.readline()
        return
    store.set_embedding_model(repo, "m", 3)
    gen = 1 + max((int(s.sha256[4:]) for s in store.file_states(repo).values()), default=0)
    with store.writer_lock(repo):
        while True:
            _generation(store, repo, gen)
            print(gen, flush=True)
            gen += 1


def _spawn(mode: str, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.index.store.test_sqlite", mode, str(db)],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def test_killed_writer_leaves_whole_files(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    for delay in (0.0, 0.05, 0.13, 0.29):
        child = _spawn("crash", db)
        assert child.stdout is not None
        assert child.stdout.readline().strip().isdigit()  # one generation committed
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.stdin is not None
        child.stdin.close()

        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        store = SqliteStore(db, tokenizer=tokens)
        try:
            repo = store.repo_id(ROOT)
            assert store.check_integrity(repo) == []
            states = store.file_states(repo)
            assert len(states) == FILES
            for state in states.values():
                gen = state.sha256.removeprefix("gen-")
                hits = store.search_lexical(
                    repo, [state.path.removesuffix(".py")], 100, SearchFilter(path_glob=state.path)
                )
                texts = sorted(c.text for c in store.chunks([cid for cid, _ in hits]).values())
                # All chunks of the file, and all of the generation its FileState records.
                assert texts == [
                    f"generation {gen} file {state.path[1:-3]} chunk {k}"
                    for k in range(CHUNKS_PER_FILE)
                ]
            with store.writer_lock(repo, wait=False):  # the dead writer's lock is gone
                pass
        finally:
            store.close()


def test_writer_lock_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    store = SqliteStore(db, tokenizer=tokens)
    repo = store.repo_id(ROOT)
    child = _spawn("hold-lock", db)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLocked, match=ROOT), store.writer_lock(repo, wait=False):
            pass
        child.stdin.write("done\n")
        child.stdin.close()
        assert child.wait(timeout=30) == 0
        with store.writer_lock(repo, wait=False):
            pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        store.close()


def _vector_store(path: Path, files: int, per_file: int) -> tuple[SqliteStore, int]:
    store = SqliteStore(path, tokenizer=tokens)
    repo = store.repo_id(ROOT)
    store.replace_files(repo, [
        (FileState(f"d{i}/f.py", 1, 1, "s", None),
         [Chunk(f"d{i}/f.py", k, k, f"c {i} {k}") for k in range(per_file)])
        for i in range(files)
    ])
    store.set_embedding_model(repo, "m", 2)
    pending = store.pending_embeddings(repo, files * per_file)
    store.store_embeddings(repo, [(cid, [1.0, n / 1000]) for n, (cid, _) in enumerate(pending)])
    return store, repo


def test_cache_catches_up_after_many_generations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader further behind than the kept tombstones reloads instead of refreshing."""
    monkeypatch.setattr(sqlite_changes, "TOMBSTONE_GENERATIONS", 2)
    writer, repo = _vector_store(tmp_path / "index.db", 4, 2)
    reader = SqliteStore(tmp_path / "index.db", tokenizer=tokens)
    try:
        assert len(reader.search_vector(repo, [1.0, 0.0], 100, SearchFilter())) == 8
        for gen in range(5):  # five generations, each dropping and re-adding d0's vectors
            writer.replace_files(repo, [(FileState("d0/f.py", 2, 2, f"g{gen}", None),
                                         [Chunk("d0/f.py", 1, 1, f"new {gen}")])])
            (cid, _), = writer.pending_embeddings(repo, 10)
            writer.store_embeddings(repo, [(cid, [0.0, 1.0])])
        hits = reader.search_vector(repo, [0.0, 1.0], 100, SearchFilter())
        assert len(hits) == 7 and hits[0] == (cid, pytest.approx(1.0))
        assert writer.check_integrity(repo) == []
    finally:
        writer.close()
        reader.close()


def test_cache_compacts_after_many_removals(tmp_path: Path) -> None:
    store, repo = _vector_store(tmp_path / "index.db", 30, 60)  # 1,800 vectors
    fresh = SqliteStore(tmp_path / "index.db", tokenizer=tokens)
    try:
        assert len(store.search_vector(repo, [1.0, 0.0], 5000, SearchFilter())) == 1800
        store.delete_files(repo, [f"d{i}/f.py" for i in range(20)])  # 1,200 rows die
        where = SearchFilter(path_glob="d2*/**")  # d2 (gone) and d20..d29
        hits = store.search_vector(repo, [0.0, 1.0], 5000, where)
        assert len(hits) == 600
        assert hits == fresh.search_vector(repo, [0.0, 1.0], 5000, where)
        assert store.search_vector(repo, [0.3, 1.0], 50, SearchFilter()) == fresh.search_vector(
            repo, [0.3, 1.0], 50, SearchFilter()
        )
        assert len(store._search.caches[repo].snapshot().ids) == 600  # compacted, not just masked
    finally:
        store.close()
        fresh.close()


def test_an_index_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    """Schema 1 added rows to the full-text index by trigger; schema 2 does it itself;
    schema 3 forgets every file and chunk (chunks became one per function, embedded
    with a header), so the next run chunks and embeds everything again."""
    db = tmp_path / "index.db"
    con = sqlite3.connect(db, isolation_level=None)
    for statement in sqlite_schema.MIGRATIONS[0]:
        con.execute(statement)
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO repos (root, chunk_count, token_count, embedding_model,"
                " embedding_dim) VALUES (?, 1, 2, 'm', 2)", (ROOT,))
    con.execute("INSERT INTO files VALUES (1, 'old.py', 1, 1, 's', NULL)")
    con.execute("INSERT INTO chunks (repo, path, start_line, end_line, kind, text, terms)"
                " VALUES (1, 'old.py', 1, 1, 'window', 'legacy row', 'legacy row')")
    con.execute("INSERT INTO vectors VALUES (1, 1, 0, zeroblob(8))")
    con.execute("INSERT INTO term_df VALUES ('legacy', 1), ('row', 1)")
    con.close()

    store = SqliteStore(db, tokenizer=tokens)
    try:
        repo = store.repo_id(ROOT)
        assert store.check_integrity(repo) == []
        assert store.file_states(repo) == {}  # the next run indexes old.py afresh
        assert store.stats(repo).chunks == 0
        assert store.search_lexical(repo, ["legacy"], 10, SearchFilter()) == []
        assert store.search_vector(repo, [1.0, 0.0], 10, SearchFilter()) == []
        store.replace_files(repo, [(FileState("new.py", 1, 1, "t", None),
                                    [Chunk("new.py", 1, 1, "fresh row")])])
        assert store.check_integrity(repo) == []  # added to the full-text index once
        hits = store.search_lexical(repo, ["row"], 10, SearchFilter())
        assert [c.path for c in store.chunks([cid for cid, _ in hits]).values()] == ["new.py"]
    finally:
        store.close()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone() == (sqlite_schema.SCHEMA_VERSION,)
        assert con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == [
            ("chunks_fts_delete",)]


def test_an_index_of_the_third_schema_gets_a_full_text_index_that_folds_nothing(
    tmp_path: Path,
) -> None:
    """Schema 3's FTS5 tokenizer (unicode61) folded `µ` into `μ`, so `term_df` disagreed
    with it; schema 4 rebuilds the full-text index from the stored terms, keeping the
    chunks and their vectors."""
    db = tmp_path / "index.db"
    con = sqlite3.connect(db, isolation_level=None)
    for statements in sqlite_schema.MIGRATIONS[:3]:
        for statement in statements:
            con.execute(statement)
    con.execute("PRAGMA user_version = 3")
    con.execute("INSERT INTO repos (root, chunk_count, token_count, embedding_model,"
                " embedding_dim) VALUES (?, 1, 2, 'm', 2)", (ROOT,))
    con.execute("INSERT INTO files VALUES (1, 'old.py', 1, 1, 's', NULL)")
    con.execute("INSERT INTO chunks (repo, path, start_line, end_line, kind, text, terms)"
                " VALUES (1, 'old.py', 1, 1, 'window', 'timeout µs', 'timeout µs')")
    con.execute("INSERT INTO chunks_fts (rowid, terms) VALUES (1, 'timeout µs')")
    con.execute("INSERT INTO vectors VALUES (1, 1, 0, zeroblob(8))")
    con.execute("INSERT INTO term_df VALUES ('timeout', 1), ('µs', 1)")
    assert con.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH '\"μs\"'"
                       ).fetchone() == (1,)  # the Greek mu: folded
    con.close()

    store = SqliteStore(db, tokenizer=tokens)
    try:
        repo = store.repo_id(ROOT)
        assert store.check_integrity(repo) == []
        assert store.stats(repo).chunks == 1 and store.stats(repo).pending_embeddings == 0
        assert [cid for cid, _ in store.search_lexical(repo, ["µs"], 10, SearchFilter())] == [1]
        assert store.search_lexical(repo, ["μs"], 10, SearchFilter()) == []
    finally:
        store.close()


if __name__ == "__main__":
    _child(sys.argv[1], Path(sys.argv[2]))


def test_close_waits_for_statements_running_in_other_threads(tmp_path: Path) -> None:
    """Closing a connection while another thread runs a statement on it crashes the
    process: close() lets running statements end and refuses new ones."""
    import threading

    from mimiverse.errors import CodeIndexError

    store = SqliteStore(tmp_path / "index.db", tokenizer=tokens)
    repo = store.repo_id(str(tmp_path))
    entered, release = threading.Event(), threading.Event()
    outcome: list[object] = []

    def statement_in_flight() -> None:
        with store._in_use():
            con = store._con()
            entered.set()
            release.wait(10)
            outcome.append(con.execute("SELECT count(*) FROM chunks").fetchone()[0])

    worker = threading.Thread(target=statement_in_flight)
    worker.start()
    assert entered.wait(10)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waiting for the statement
    with pytest.raises(CodeIndexError, match="is closed"):
        store.stats(repo)
    release.set()
    worker.join(10)
    closer.join(10)
    assert outcome == [0] and not closer.is_alive()


def test_opening_waits_out_another_process_creating_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database still in rollback mode with a write open on it (a first worker creating
    # the index): switching to WAL is refused at once, without SQLite's busy wait.
    db = tmp_path / "index.db"
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE elsewhere (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO elsewhere VALUES (1)")
    waits: list[float] = []

    class Clock:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:  # the writer finishes while the opener waits
            waits.append(seconds)
            writer.execute("COMMIT")

    monkeypatch.setattr(sqlite_module, "time", Clock)
    store = SqliteStore(db, tokenizer=tokens)
    try:
        assert len(waits) == 1
        assert store.stats(store.repo_id(ROOT)).files == 0
        reader = sqlite3.connect(db)
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        reader.close()
    finally:
        store.close()
        writer.close()
