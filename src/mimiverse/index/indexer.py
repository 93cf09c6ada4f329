"""Incremental, atomic indexing of one repository (lexical part; vectors come after).

A run: walk (one stat per file) -> diff against the stored FileStates -> read, hash and
chunk only files whose size or mtime changed -> replace them in batches, each batch one
transaction -> forget files that disappeared. Unchanged content with a new mtime only
refreshes its FileState. A run killed at any point leaves whole files committed; the next
run picks up the rest. One writer per repository (the store's lock).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mimiverse.config import IndexSettings
from mimiverse.index.chunker import chunk_file
from mimiverse.index.model import Chunk, FileState
from mimiverse.index.store.base import IndexStore
from mimiverse.index.walker import SourceFile, read_source, walk

BATCH_FILES = 100  # files per transaction: small enough that early files are searchable fast
BATCH_BYTES = 4 * 1024 * 1024

# progress(done, total) while changed files are processed
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class IndexReport:
    root: str
    files: int = 0  # files in the index after the run
    chunks: int = 0
    indexed: int = 0  # files (re)chunked by this run
    unchanged: int = 0
    deleted: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    took_ms: float = 0.0


class Indexer:
    def __init__(self, store: IndexStore, root: Path, settings: IndexSettings) -> None:
        self.store = store
        self.root = root.resolve()
        self.settings = settings
        self.repo = store.repo_id(str(self.root))

    def run(self, *, wait: bool = True, progress: Progress | None = None) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport(root=str(self.root))
        with self.store.writer_lock(self.repo, wait=wait):
            walked = walk(self.root, max_file_bytes=self.settings.max_file_bytes)
            report.skipped.update(walked.skipped)
            known = self.store.file_states(self.repo)
            changed: list[SourceFile] = []
            present: set[str] = set()
            for source in walked.files:
                present.add(source.path)
                old = known.get(source.path)
                if old is not None and old.size == source.size and old.mtime_ns == source.mtime_ns:
                    report.unchanged += 1
                else:
                    changed.append(source)
            gone = [path for path in known if path not in present]
            self._index(changed, known, report, progress)
            # Files that vanished, or turned unreadable / secret / binary, leave the index.
            gone += [s.path for s in changed if s.path in known and s.path in self._skipped_now]
            if gone:
                self.store.delete_files(self.repo, sorted(set(gone)))
                report.deleted = len(set(gone))
        stats = self.store.stats(self.repo)
        report.files, report.chunks = stats.files, stats.chunks
        report.took_ms = round((time.perf_counter() - started) * 1000, 1)
        return report

    def _index(
        self, changed: Sequence[SourceFile], known: dict[str, FileState],
        report: IndexReport, progress: Progress | None,
    ) -> None:
        self._skipped_now: set[str] = set()
        batch: list[tuple[FileState, Sequence[Chunk]]] = []
        touched: list[FileState] = []
        batch_bytes = 0
        for done, source in enumerate(changed, start=1):
            read = read_source(source, max_file_bytes=self.settings.max_file_bytes)
            if isinstance(read, str):  # a skip reason
                report.skipped[read] += 1
                self._skipped_now.add(source.path)
            else:
                state = FileState(source.path, source.size, source.mtime_ns, read.sha256,
                                  source.language)
                old = known.get(source.path)
                if old is not None and old.sha256 == read.sha256:
                    # Touched, not changed (a checkout, a save without edits): keep the
                    # chunks and their vectors, remember the new size/mtime.
                    touched.append(state)
                    report.unchanged += 1
                else:
                    batch.append((state, chunk_file(source.path, read.text, source.language)))
                    report.indexed += 1
                    batch_bytes += source.size
            if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                self._flush(batch)
                batch, batch_bytes = [], 0
            if progress is not None:
                progress(done, len(changed))
        self._flush(batch)
        if touched:
            self.store.refresh_file_states(self.repo, touched)

    def _flush(self, batch: list[tuple[FileState, Sequence[Chunk]]]) -> None:
        if batch:
            self.store.replace_files(self.repo, batch)
