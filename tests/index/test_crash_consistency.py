"""Crash consistency of indexing, on both stores: a real `mimiverse index` process is
killed (SIGKILL) early in the lexical pass, mid-way through it, and during the embedding
pass; after each kill the index must be consistent, and the next run must complete it to
exactly the content of a clean index of the same files.

Kill points are found by watching, never by sleeping: the lexical pass by polling the
database for committed files; the embedding pass by a loopback OpenAI-compatible server
that answers a set number of embedding requests and holds the next one, so the process is
known to be inside the embedding loop (with some vectors stored) when it is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import mimiverse
from mimiverse.config import IndexSettings
from mimiverse.index.store import sqlite_path
from mimiverse.index.store.base import IndexStore
from mimiverse.index.store.sqlite import SqliteStore
from tests.cli.test_cli import write_config
from tests.index.store.conftest import postgres_conninfo, postgres_url
from tests.servers.behaviour import Behaviour
from tests.servers.harness import ServerHandle, run_in_thread
from tests.servers.openai_server import OpenAIApp

__all__ = ["postgres_conninfo", "postgres_url"]  # the store tests' PostgreSQL fixtures

SRC = Path(mimiverse.__file__).resolve().parents[1]  # the code under test, for the child


@dataclass
class GatedEmbeddings(Behaviour):
    """Answers `allow` embedding requests, then holds every later one (None: answer all).
    `held` is set when a request is being held: the indexer is then waiting inside its
    embedding loop, with the batches before it stored."""

    allow: int | None = None
    held: threading.Event = field(default_factory=threading.Event)

    def record(self, path: str, body: Any, headers: dict[str, str], peer: str) -> None:
        super().record(path, body, headers, peer)
        if path == "/v1/embeddings" and self.allow is not None and (
            self.requests[path] > self.allow
        ):
            self.mode = "hang"
            self.held.set()

    def gate(self, allow: int | None) -> None:
        with self._lock:
            self.allow, self.mode = allow, "ok"
            self.requests.clear()
            self.held.clear()


@pytest.fixture
def embedder() -> Iterator[ServerHandle]:
    with run_in_thread(OpenAIApp(GatedEmbeddings(embedding_dim=8))) as handle:
        yield handle


def make_repo(root: Path) -> int:
    """A small repository of real files: Mimiverse's own package sources."""
    package = SRC / "mimiverse"
    count = 0
    for source in sorted(package.rglob("*.py")):
        target = root / source.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)  # keeps mtimes: both copies index alike
        count += 1
    return count


@dataclass
class Store:
    """One store kind: its config section, and raw read access for the assertions."""

    kind: str
    index_toml: str
    open: Callable[[Path], IndexStore]  # the store that holds the repository at a root
    query: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def _sqlite_query(data_dir: Path) -> Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Queries over every repository's index under `data_dir` (one SQLite file each)."""

    def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for db in sorted(data_dir.glob("indexes/*/index.db")):
            rows += _sqlite_rows(db, sql, params)
        return rows

    return query


def _sqlite_rows(db: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql.replace("%s", "?"), params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the child has not created its schema yet
            return []
        raise
    finally:
        con.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        data = IndexSettings(data_dir=str(tmp_path / "data"))
        return Store("sqlite", f'store = "sqlite"\ndata_dir = "{data.data_dir}"\n',
                     lambda root: SqliteStore(sqlite_path(data, root.resolve())),
                     _sqlite_query(Path(data.data_dir)))
    import psycopg

    from mimiverse.index.store.postgres import PostgresStore

    conninfo: str = request.getfixturevalue("postgres_conninfo")

    def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass('chunks') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return []
            return conn.execute(sql, params).fetchall()

    escaped = conninfo.replace("\\", "\\\\").replace('"', '\\"')
    return Store("postgres", f'store = "postgres"\nurl = "{escaped}"\n',
                 lambda _root: PostgresStore(conninfo), query)


class Runner:
    def __init__(self, store: Store, embedder: ServerHandle, home: Path) -> None:
        self.store = store
        self.embedder = embedder
        self.config = write_config(home, embedder.url, kind="openai",
                                   extra=f"[index]\nembed_batch = 16\n{store.index_toml}")

    def start(self, root: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(SRC), "MIMIVERSE_CONFIG": str(self.config),
               "NO_COLOR": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "mimiverse.cli.main", "index", str(root)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def complete(self, root: Path) -> None:
        self.behaviour.gate(None)
        proc = self.start(root)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()

    @property
    def behaviour(self) -> GatedEmbeddings:
        behaviour = self.embedder.behaviour
        assert isinstance(behaviour, GatedEmbeddings)
        return behaviour

    def files(self, root: Path) -> int:
        rows = self.store.query(
            "SELECT count(*) FROM files f JOIN repos r ON r.id = f.repo WHERE r.root = %s",
            (str(root),))
        return sum(int(row[0]) for row in rows)  # one row per index file (SQLite)

    def kill_when_files(self, root: Path, at_least: int) -> int:
        """Kill the run as soon as `at_least` files are committed; how many were. (Where
        exactly depends on how fast the child writes: typically the first batch of 4 files,
        and about 47 of 78. Any point must leave a consistent index.)"""
        self.behaviour.gate(0)  # the run cannot finish: its embedding pass is held
        proc = self.start(root)
        try:
            while (files := self.files(root)) < at_least:
                assert proc.poll() is None, proc.communicate()[0].decode()
            return files
        finally:
            kill(proc)

    def kill_while_embedding(self, root: Path, batches: int) -> None:
        """Kill the run while it waits for the embedding request after `batches` (plus
        the dimension probe)."""
        self.behaviour.gate(batches + 1)
        proc = self.start(root)
        try:
            held = False
            while not held and proc.poll() is None:
                held = self.behaviour.held.wait(timeout=1)
            assert held, proc.communicate()[0].decode()
        finally:
            kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaps it and closes the pipe
    assert proc.returncode == -signal.SIGKILL


def snapshot(store: Store, root: Path) -> dict[str, Any]:
    """Everything the index holds for the repository at `root`, keyed by content (ids and
    the root itself differ between two indexes of the same files)."""
    q = store.query
    repo = f"(SELECT id FROM repos WHERE root = '{root}')"
    terms = "terms::text" if store.kind == "postgres" else "terms"
    vector = "e.embedding::text" if store.kind == "postgres" else "hex(e.vector)"
    table = "embeddings" if store.kind == "postgres" else "vectors"
    return {
        "repo": q(f"SELECT embedding_model, embedding_dim, chunk_count, token_count"
                  f" FROM repos WHERE id = {repo}", ()),
        "files": q(f"SELECT path, size, mtime_ns, sha256, language FROM files"
                   f" WHERE repo = {repo} ORDER BY path", ()),
        "chunks": q(f"SELECT path, start_line, end_line, symbol, kind, language, text, {terms}"
                    f" FROM chunks WHERE repo = {repo} ORDER BY path, start_line, end_line",
                    ()),
        "vectors": q(f"SELECT c.path, c.start_line, c.end_line, {vector} FROM {table} e"
                     f" JOIN chunks c ON c.id = e.chunk_id WHERE e.repo = {repo}"
                     " ORDER BY 1, 2, 3", ()),
    }


def assert_consistent(store: Store, root: Path, clean: dict[str, Any]) -> dict[str, Any]:
    """The crashed index holds whole files of the clean one, and agrees with itself."""
    opened = store.open(root)
    try:
        repo = opened.repo_id(str(root))
        assert opened.check_integrity(repo) == []
        stats = opened.stats(repo)
    finally:
        opened.close()
    now = snapshot(store, root)
    files = {row[0]: row for row in now["files"]}
    clean_files = {row[0]: row for row in clean["files"]}
    assert set(files) <= set(clean_files)
    assert all(files[p] == clean_files[p] for p in files)
    # Every file's chunks are all there or none; no chunk without its file row.
    assert [c for c in now["chunks"] if c[0] in files] == now["chunks"]
    assert now["chunks"] == [c for c in clean["chunks"] if c[0] in files]
    # Vectors stored are the clean index's vectors of those chunks.
    assert set(now["vectors"]) <= set(clean["vectors"])
    # The stats agree with the rows, and the BM25 counters with the chunks.
    assert (stats.files, stats.chunks) == (len(files), len(now["chunks"]))
    assert stats.pending_embeddings == len(now["chunks"]) - len(now["vectors"])
    if now["repo"]:
        assert now["repo"][0][2] == len(now["chunks"])
    return now


def test_killed_indexing_runs_leave_a_consistent_index_the_next_run_completes(
    store: Store, embedder: ServerHandle, tmp_path: Path
) -> None:
    runner = Runner(store, embedder, tmp_path)
    clean_root, root = tmp_path / "clean", tmp_path / "repo"
    copied = make_repo(clean_root)
    assert make_repo(root) == copied

    runner.complete(clean_root)
    clean = snapshot(store, clean_root)
    total = len(clean["files"])  # what the walker keeps of them (it may skip a few)
    assert copied - 5 <= total <= copied and len(clean["vectors"]) == len(clean["chunks"])

    # Early: as soon as the first batch of files is committed.
    early = runner.kill_when_files(root, 1)
    assert_consistent(store, root, clean)
    # Mid-way: the next run carries on from there, and dies half-way through.
    mid = runner.kill_when_files(root, total // 2)
    assert mid >= early
    assert_consistent(store, root, clean)
    # During the embedding pass: lexical done, two batches of vectors stored.
    runner.kill_while_embedding(root, batches=2)
    state = assert_consistent(store, root, clean)
    assert len(state["files"]) == total
    assert 0 < len(state["vectors"]) < len(state["chunks"])

    runner.complete(root)
    assert_consistent(store, root, clean)
    assert snapshot(store, root) == clean
