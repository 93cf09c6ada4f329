"""The indexer's pipeline: worker processes, their failures, batching; same index either way."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from mimiverse.config import IndexSettings
from mimiverse.index import indexer as indexer_module
from mimiverse.index.indexer import Indexer, IndexReport
from mimiverse.index.model import SearchFilter
from mimiverse.index.store import sqlite as sqlite_module
from mimiverse.index.store.sqlite import SqliteStore
from mimiverse.index.tokenize import tokens
from mimiverse.index.walker import DEFAULT_MAX_FILE_BYTES, walk

FILES = 130  # enough for two workers (one per PARALLEL_MIN_FILES changed files)


def source(i: int) -> tuple[str, str]:
    """A small file of one of several languages, with names unique to it."""
    kind = i % 4
    if kind == 0:
        return f"pkg{i % 7}/mod_{i}.py", (
            f'"""Module {i}."""\nimport os\n\n\nclass Widget{i}:\n'
            f"    def render_{i}(self, path):\n        return os.path.join(path, 'w{i}')\n\n"
            f"    def size_{i}(self):\n        total = 0\n        for n in range({i}):\n"
            f"            total += n\n        return total\n\n\n"
            f"def helper_{i}(value):\n    if value is None:\n        return {i}\n"
            f"    return value * {i}\n"
        )
    if kind == 1:
        return f"web/part{i}.js", (
            f"export function addItem{i}(cart, item) {{\n  cart.items.push(item);\n"
            f"  cart.count{i} += 1;\n  return cart;\n}}\n\n"
            f"export const removeItem{i} = (cart, id) => {{\n"
            f"  cart.items = cart.items.filter((x) => x.id !== id);\n  return cart;\n}};\n"
        )
    if kind == 2:
        return f"cmd/tool{i}/main.go", (
            f'package main\n\nimport "fmt"\n\nfunc handle{i}(name string) string {{\n'
            f'\treturn fmt.Sprintf("hello %s {i}", name)\n}}\n\nfunc main() {{\n'
            f'\tfmt.Println(handle{i}("x"))\n}}\n'
        )
    return f"notes/n{i}.txt", "\n".join(f"note {i} line {k} about topic_{k % 5}"
                                         for k in range(40)) + "\n"


def make_repo(root: Path, count: int = FILES) -> Path:
    for i in range(count):
        rel, text = source(i)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # Skipped when read (by a worker): binary content under a source extension.
    (root / "pkg1" / "blob.py").write_bytes(b"\x00\x01binary" * 50)
    return root


def index(root: Path, workers: int) -> IndexReport:
    store = SqliteStore(root / ".mimiverse" / "index.db", tokenizer=tokens)
    try:
        report = Indexer(store, root, IndexSettings(), workers=workers).run()
        assert store.check_integrity(store.repo_id(str(root.resolve()))) == []
        return report
    finally:
        store.close()


def contents(root: Path) -> tuple[object, ...]:
    """What the index holds, apart from row ids."""
    with sqlite3.connect(root / ".mimiverse" / "index.db") as con:
        return (
            con.execute("SELECT path, start_line, end_line, symbol, kind, language, text, terms"
                        " FROM chunks ORDER BY path, start_line, end_line").fetchall(),
            con.execute("SELECT path, size, sha256, language FROM files ORDER BY path").fetchall(),
            con.execute("SELECT term, df FROM term_df ORDER BY term").fetchall(),
            con.execute("SELECT chunk_count, token_count FROM repos").fetchall(),
        )


DELETED = (1, 5, 9)


def edit(root: Path) -> None:
    """Change the Python files and touch the others (new mtime, same bytes), but every
    fifth; delete a few and add one: more than 100 changed files, so two workers."""
    for i in range(FILES):
        rel, text = source(i)
        if i in DELETED:
            (root / rel).unlink()
        elif i % 5:
            (root / rel).write_text(text + f"\n# edited {i}\n" if rel.endswith(".py") else text)
            os.utime(root / rel, ns=(1_000_000_000 * (i + 7), 1_000_000_000 * (i + 7)))
    (root / "pkg0" / "added.py").write_text("def brand_new_function():\n    return 1\n")


def summary(report: IndexReport) -> tuple[object, ...]:
    return (report.files, report.chunks, report.indexed, report.unchanged, report.deleted,
            report.skipped)


@pytest.fixture
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("worker processes started")

    monkeypatch.setattr(indexer_module, "_Workers", refuse)


def test_worker_processes_build_the_same_index_as_one_process(tmp_path: Path) -> None:
    parallel, serial = make_repo(tmp_path / "parallel"), make_repo(tmp_path / "serial")
    first = index(parallel, workers=2)
    assert (first.files, first.indexed, first.skipped["binary"]) == (FILES, FILES, 1)
    assert summary(first) == summary(index(serial, workers=0))
    assert contents(parallel) == contents(serial)
    for root in (parallel, serial):
        edit(root)
    again = index(parallel, workers=2)
    assert again.deleted == len(DELETED)
    assert again.unchanged > FILES // 2  # the touched files kept their chunks
    assert summary(again) == summary(index(serial, workers=0))
    assert contents(parallel) == contents(serial)


def test_small_change_sets_are_chunked_in_process(
    tmp_path: Path, no_workers: None
) -> None:
    count = indexer_module.PARALLEL_MIN_FILES - 2  # and the binary file: one short
    report = index(make_repo(tmp_path / "repo", count), workers=8)
    assert report.indexed == count


def test_one_cpu_starts_no_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_workers: None
) -> None:
    # The indexer chunks while it waits, so a single core needs no second process.
    monkeypatch.setattr(indexer_module, "available_cpus", lambda: 1)
    root = make_repo(tmp_path / "repo")
    store = SqliteStore(root / ".mimiverse" / "index.db", tokenizer=tokens)
    try:
        assert Indexer(store, root, IndexSettings()).run().indexed == FILES
    finally:
        store.close()


def test_files_skipped_again_start_no_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Generated files are read (and skipped) on every run, as they never get a FileState.
    root = make_repo(tmp_path / "repo", count=10)
    for i in range(3 * indexer_module.PARALLEL_MIN_FILES):
        (root / "gen" / f"g{i}.py").parent.mkdir(exist_ok=True)
        (root / "gen" / f"g{i}.py").write_text("# Code generated by protoc. DO NOT EDIT.\nx = 1\n")
    assert index(root, workers=2).skipped["generated"] == 3 * indexer_module.PARALLEL_MIN_FILES

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("worker processes started")

    monkeypatch.setattr(indexer_module, "_Workers", refuse)
    again = index(root, workers=2)
    assert (again.indexed, again.skipped["generated"]) == (0, 3 * indexer_module.PARALLEL_MIN_FILES)


def test_killed_workers_leave_their_files_to_the_indexer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    pools: list[indexer_module._Workers] = []
    start, take = indexer_module._Workers.__init__, indexer_module._Workers._take

    def start_stopped(self: indexer_module._Workers, *args: Any) -> None:
        start(self, *args)
        for worker in self._workers:  # they hold their tasks unanswered until killed
            os.kill(worker.proc.pid, signal.SIGSTOP)

    def kill_when_waited_for(self: indexer_module._Workers, number: int) -> list[object]:
        if number == 1:  # task 0 is done here; the workers hold the next ones
            pools.append(self)
            for worker in self._workers:
                worker.proc.kill()
        return take(self, number)  # type: ignore[return-value]

    monkeypatch.setattr(indexer_module._Workers, "__init__", start_stopped)
    monkeypatch.setattr(indexer_module._Workers, "_take", kill_when_waited_for)
    parallel, serial = make_repo(tmp_path / "parallel"), make_repo(tmp_path / "serial")
    with caplog.at_level(logging.WARNING, "mimiverse.index"):
        assert index(parallel, workers=2).indexed == FILES
    assert "an indexing worker stopped" in caplog.text
    index(serial, workers=0)
    assert contents(parallel) == contents(serial)
    assert all(w.proc.poll() is not None for pool in pools for w in pool._workers)


def test_the_indexer_chunks_the_tasks_no_worker_has_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers that are never handed a task: instead of waiting, this process does them all.
    monkeypatch.setattr(indexer_module._Workers, "_feed", lambda self: None)
    parallel, serial = make_repo(tmp_path / "parallel"), make_repo(tmp_path / "serial")
    assert index(parallel, workers=2).indexed == FILES
    index(serial, workers=0)
    assert contents(parallel) == contents(serial)


def test_workers_exit_once_every_task_is_sent(tmp_path: Path) -> None:
    sources = walk(make_repo(tmp_path / "repo")).files
    pool = indexer_module._Workers(2, DEFAULT_MAX_FILE_BYTES, tokens)
    try:
        outcomes = list(pool.outcomes([(s, None) for s in sources]))
        assert [s for s, _ in outcomes] == sources
        # Their input ended with the last task: they exit while the writer still writes,
        # not when it closes the pool.
        assert [w.proc.wait(timeout=60) for w in pool._workers] == [0, 0]
    finally:
        pool.close()


@pytest.mark.parametrize("executable", ["/nonexistent/python", shutil.which("true")])
def test_workers_that_cannot_start_or_run_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executable: str | None
) -> None:
    # No such program (Popen fails), or one that exits at once (every task comes back).
    if executable is None:
        pytest.skip("no `true` program here")
    serial = make_repo(tmp_path / "serial")
    index(serial, workers=0)
    monkeypatch.setattr(sys, "executable", executable)
    parallel = make_repo(tmp_path / "parallel")
    assert index(parallel, workers=2).indexed == FILES
    assert contents(parallel) == contents(serial)


def test_workers_import_mimiverse_not_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # A repository with modules named like the standard library's, indexed from inside.
    root = make_repo(tmp_path / "repo")
    (root / "pickle.py").write_text("raise SystemExit('the repository was imported')\n")
    (root / "struct.py").write_text("raise SystemExit('the repository was imported')\n")
    monkeypatch.chdir(root)
    with caplog.at_level(logging.WARNING, "mimiverse.index"):
        assert index(root, workers=2).indexed == FILES + 2
    assert "worker" not in caplog.text


def batch_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Files per transaction of a first in-process index of 600 files."""
    root = make_repo(tmp_path / "repo", count=600)
    store = SqliteStore(root / ".mimiverse" / "index.db", tokenizer=tokens)
    sizes: list[int] = []
    replace = store.replace_files

    def record(repo: int, files: list[tuple[object, ...]]) -> None:
        sizes.append(len(files))
        replace(repo, files)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "replace_files", record)
    Indexer(store, root, IndexSettings(), workers=0).run()
    store.close()
    return sizes


def test_batches_start_small_grow_and_shrink_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_workers: None
) -> None:
    sizes = batch_sizes(tmp_path, monkeypatch)
    assert sum(sizes) == 600
    assert sizes[:4] == [4, 8, 16, 32]
    assert max(sizes) <= indexer_module.BATCH_FILES
    assert sizes[-1] <= indexer_module.FIRST_BATCH_FILES
    peak = sizes.index(max(sizes))
    assert sizes[peak:] == sorted(sizes[peak:], reverse=True)


def test_what_is_chunked_already_is_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_workers: None
) -> None:
    # Small last batches only help while files are still being chunked beside the writes.
    monkeypatch.setattr(indexer_module._Prepared, "all_ready", lambda self: True)
    assert batch_sizes(tmp_path, monkeypatch) == [4, 8, 16, 32, 64, 128, 256, 600 - 508]


def test_first_files_are_searchable_before_the_run_ends(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    store = SqliteStore(root / ".mimiverse" / "index.db", tokenizer=tokens)
    probe = SqliteStore(root / ".mimiverse" / "index.db", tokenizer=tokens)
    repo = probe.repo_id(str(root.resolve()))
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        if done == total // 2:  # batches of 4, 8, 16 and 32 files are in by then
            hits = probe.search_lexical(repo, ["fmt"], 50, SearchFilter())  # the Go files
            seen.append((probe.stats(repo).files, len(hits)))

    Indexer(store, root, IndexSettings(), workers=2).run(progress=progress)
    store.close()
    probe.close()
    assert len(seen) == 1 and seen[0][0] >= 28 and seen[0][1] > 0, seen


def test_a_run_leaves_checkpoints_until_its_files_are_in(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    db = root / ".mimiverse" / "index.db"
    store = SqliteStore(db, tokenizer=tokens)
    seen: set[int] = set()

    def wal_pages() -> int:
        return int(store._con().execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    usual = wal_pages()
    Indexer(store, root, IndexSettings(), workers=0).run(
        progress=lambda done, total: seen.add(wal_pages())
    )
    assert seen == {sqlite_module.RUN_WAL_PAGES} and wal_pages() == usual
    store.close()
    reopened = SqliteStore(db, tokenizer=tokens)
    repo = reopened.repo_id(str(root.resolve()))
    assert reopened.stats(repo).files == FILES and reopened.check_integrity(repo) == []
    reopened.close()

