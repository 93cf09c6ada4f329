"""Incremental, atomic indexing of one repository (lexical part; vectors come after).

A run: walk (one stat per file) -> diff against the stored FileStates -> read, hash and
chunk only files whose size or mtime changed -> replace them in batches, each batch one
transaction -> forget files that disappeared. Unchanged content with a new mtime only
refreshes its FileState. A run killed at any point leaves whole files committed; the next
run picks up the rest. One writer per repository (the store's lock).

Speed: with many changed files, worker processes read, chunk and tokenise them (parsing
holds the GIL, so threads would not help) while this process writes, overlapped with
them; when it has nothing to write it chunks the next task itself instead of waiting, so
one worker per CPU but one keeps every core busy (each worker costs ~0.2 s of CPU to
start and to warm its caches). Workers are plain `python -c` subprocesses fed over pipes,
not multiprocessing: its spawn re-imports the parent's `__main__` (the whole CLI, ~0.8 s
per worker). Their input ends with the last task, so they exit while the last outcomes
are written. Batches start small, so the first files are searchable at once, grow, since
large transactions write faster, and shrink again towards the end, so that little is
left to write once the workers are done.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import mimiverse
from mimiverse.index import wire
from mimiverse.index.model import Chunk, FileState
from mimiverse.index.prepare import TOKENIZERS, prepare
from mimiverse.index.store import Tokenizer
from mimiverse.index.store.base import IndexStore
from mimiverse.index.walker import SourceFile, walk
from mimiverse.index.wire import Item, Outcome

if TYPE_CHECKING:
    from mimiverse.config import IndexSettings

log = logging.getLogger("mimiverse.index")

FIRST_BATCH_FILES = 4  # the first transaction: the first files are searchable within ~0.1 s
BATCH_FILES = 256  # batches double up to this: fewer, larger transactions write faster
BATCH_BYTES = 4 * 1024 * 1024
PARALLEL_MIN_FILES = 50  # fewer changed files are chunked here: a worker takes ~0.1 s to start
SERIAL_FILES = 8  # files chunked here before workers start (they often need none)
TASK_FILES = 16  # files per worker task (the first ones smaller, to start the pipeline)
TASK_DEPTH = 2  # tasks queued per worker, so it never waits for the next
MAX_WORKERS = 8  # one writer keeps up with about this many
RESULT_WINDOW = 6  # tasks per worker done but not yet taken: bounds memory if writes lag

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
    redacted: Counter[str] = field(default_factory=Counter)  # secrets replaced, by kind
    took_ms: float = 0.0


class Indexer:
    def __init__(
        self, store: IndexStore, root: Path, settings: IndexSettings, *, workers: int | None = None
    ) -> None:
        """`workers`: processes that chunk files beside this one, which chunks too while it
        waits for them; None: one per available CPU but one (none on one CPU), 0: none."""
        self.store = store
        self.root = root.resolve()
        self.settings = settings
        self.repo = store.repo_id(str(self.root))
        self.workers = available_cpus() - 1 if workers is None else workers

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
        items = [(s, _sha(known.get(s.path))) for s in changed]
        prepared = _Prepared(items, self.settings.max_file_bytes, self.workers,
                             self.store.tokenizer())
        try:
            self._write(iter(prepared), len(items), report, progress, prepared.all_ready)
        finally:
            prepared.close()

    def _write(
        self, outcomes: Iterator[tuple[SourceFile, Outcome]], total: int,
        report: IndexReport, progress: Progress | None,
        all_ready: Callable[[], bool] = lambda: False,
    ) -> None:
        """Store outcomes in batches that double in size, and halve again at the end.

        Small first batches make the first files searchable at once; large ones write
        faster; small last ones keep short the write that nothing runs beside, unless
        every outcome left is `all_ready` (chunked): then the rest go in one.
        """
        batch: list[tuple[FileState, Sequence[Chunk]]] = []
        touched: list[FileState] = []
        batch_bytes = 0
        limit = FIRST_BATCH_FILES
        for done, (source, outcome) in enumerate(outcomes, start=1):
            if isinstance(outcome, tuple):
                state, chunks, redacted = outcome
                batch.append((state, chunks))
                report.redacted.update(redacted)
                report.indexed += 1
                batch_bytes += source.size
            elif isinstance(outcome, FileState):
                # Touched, not changed (a checkout, a save without edits): keep the chunks
                # and their vectors, remember the new size/mtime.
                touched.append(outcome)
                report.unchanged += 1
            else:  # a skip reason
                report.skipped[outcome] += 1
                self._skipped_now.add(source.path)
            left = total if all_ready() else (total - done) // 2
            if len(batch) >= min(limit, max(FIRST_BATCH_FILES, left)) or (
                batch_bytes >= BATCH_BYTES
            ):
                self.store.replace_files(self.repo, batch)
                batch, batch_bytes = [], 0
                limit = min(2 * limit, BATCH_FILES)
            if progress is not None:
                progress(done, total)
        if batch:
            self.store.replace_files(self.repo, batch)
        if touched:
            self.store.refresh_file_states(self.repo, touched)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _sha(state: FileState | None) -> str | None:
    return None if state is None else state.sha256


class _Prepared:
    """The changed files' outcomes, in order. The first are prepared here; once
    SERIAL_FILES of them needed chunking, worker processes take over if enough files are
    left. (A re-run mostly meets files skipped again or only touched, which cost little:
    starting workers for those would cost more than it saves.)"""

    def __init__(
        self, items: Sequence[Item], max_file_bytes: int, workers: int, tokenize: Tokenizer
    ) -> None:
        self._items = items
        self._max_file_bytes = max_file_bytes
        self._workers = workers
        self._tokenize = tokenize
        self._pool: _Workers | None = None

    def __iter__(self) -> Iterator[tuple[SourceFile, Outcome]]:
        chunked = 0
        for number, (source, sha) in enumerate(self._items):
            left = len(self._items) - number
            count = min(self._workers, MAX_WORKERS, left // PARALLEL_MIN_FILES)
            if chunked >= SERIAL_FILES and count > 0 and sys.executable:
                try:
                    self._pool = _Workers(count, self._max_file_bytes, self._tokenize)
                except OSError as exc:  # no processes to be had: do it all here
                    log.warning("indexing without worker processes: %s", exc)
                    self._workers = 0
                else:
                    yield from self._pool.outcomes(self._items[number:])
                    return
            outcome = prepare(source, sha, self._max_file_bytes, self._tokenize)
            chunked += isinstance(outcome, tuple)
            yield source, outcome

    def all_ready(self) -> bool:
        """Whether every outcome not yet taken is chunked already (by the workers)."""
        return self._pool is not None and self._pool.all_ready()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


# -- worker processes (their own side is prepare.worker_main) --------------------------

def _widen(pipe: IO[bytes] | None) -> None:
    """Let a worker write a task's outcomes (~0.5 MB) at once. Its reader thread needs the
    GIL between reads, and gets it only every few ms while this process chunks or
    writes: through a 64 KiB pipe the worker spent a fifth of its time blocked."""
    size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux
    if pipe is not None and size is not None:
        with suppress(OSError):  # over the system's pipe-max-size: keep the default
            fcntl.fcntl(pipe.fileno(), size, 1 << 20)


def _end_input(proc: subprocess.Popen[bytes]) -> None:
    """Close a worker's input: it finishes the tasks it holds, then exits."""
    if proc.stdin is not None and not proc.stdin.closed:
        with suppress(OSError):  # a broken pipe: it is gone already
            proc.stdin.close()


@dataclass(eq=False, slots=True)
class _Worker:
    proc: subprocess.Popen[bytes]
    tasks: list[int] = field(default_factory=list)  # sent, not answered yet
    alive: bool = True


class _Workers:
    """Worker processes that prepare files, task by task; outcomes come back in order.

    Each worker holds up to TASK_DEPTH tasks; a thread per worker reads its answers and
    hands it the next task. A task a worker could not do (it died, or it raised) is done
    in this process instead, so the run still finishes, or fails as it would have here.
    """

    def __init__(self, count: int, max_file_bytes: int, tokenize: Tokenizer) -> None:
        self._max_file_bytes = max_file_bytes
        self._tokenize = tokenize
        self._cond = threading.Condition()
        self._tasks: list[list[Item]] = []
        self._done: dict[int, list[Outcome] | None] = {}
        self._sent = 0  # tasks handed out
        self._taken = 0  # tasks whose outcomes the writer took
        self._window = RESULT_WINDOW * count
        # Workers tokenise only with a tokenizer they know by name; else the store does.
        shipped = next((name for name, known in TOKENIZERS.items() if known is tokenize), None)
        env = dict(os.environ)
        # The workers import this same mimiverse, wherever it was imported from.
        package_root = str(Path(mimiverse.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH")) if p
        )
        self._workers: list[_Worker] = []
        self._readers: list[threading.Thread] = []
        for _ in range(count):
            try:
                # -P: the current folder (the repository, say) must not shadow modules.
                proc = subprocess.Popen(
                    [sys.executable, "-P", "-c",
                     "from mimiverse.index.prepare import worker_main; worker_main()"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                )
            except OSError:
                if not self._workers:
                    raise
                break  # go on with those that started
            _widen(proc.stdout)
            worker = _Worker(proc)
            self._workers.append(worker)
            assert proc.stdin is not None
            try:
                wire.send(proc.stdin, [max_file_bytes, shipped])
            except OSError:
                worker.alive = False
            reader = threading.Thread(target=self._read, args=(worker,), daemon=True,
                                      name="index-worker-reader")
            reader.start()
            self._readers.append(reader)

    def outcomes(self, items: Sequence[Item]) -> Iterator[tuple[SourceFile, Outcome]]:
        tasks: list[list[Item]] = []
        start, size = 0, 4
        while start < len(items):
            tasks.append(list(items[start : start + size]))
            start += size
            size = min(2 * size, TASK_FILES)
        with self._cond:
            self._tasks = tasks
            if tasks:
                # The first task is done here while the workers start: the first files
                # are searchable at once.
                self._done[0] = None
                self._sent = 1
            self._feed()
        for number, task in enumerate(tasks):
            yield from zip((s for s, _ in task), self._take(number), strict=True)

    def all_ready(self) -> bool:
        with self._cond:
            left = range(self._taken, len(self._tasks))
            return all(self._done.get(n) is not None for n in left)

    def _take(self, number: int) -> list[Outcome]:
        """Task `number`'s outcomes, once ready; done here if its worker could not.

        Until they are ready this process does the next task no worker has, rather than
        wait: its core is never idle while work is left, so it needs one worker fewer.
        """
        with self._cond:
            while number not in self._done:
                if number >= self._sent and not any(w.alive for w in self._workers):
                    self._done[number] = None  # no worker left
                    break
                if self._sent < len(self._tasks) and self._sent < self._taken + self._window:
                    spare = self._sent
                    self._sent += 1
                    self._cond.release()
                    try:
                        prepared = self._prepare(spare)
                    finally:
                        self._cond.acquire()
                    self._done[spare] = prepared
                    continue
                self._cond.wait()
            outcomes = self._done.pop(number)
            self._taken = number + 1
            self._feed()
        return outcomes if outcomes is not None else self._prepare(number)

    def _prepare(self, number: int) -> list[Outcome]:
        tokenize = self._tokenize
        return [prepare(s, sha, self._max_file_bytes, tokenize) for s, sha in self._tasks[number]]

    def _feed(self) -> None:
        """Hand out tasks to workers with room (the condition's lock is held)."""
        for worker in self._workers:
            while (
                worker.alive and len(worker.tasks) < TASK_DEPTH
                and self._sent < len(self._tasks) and self._sent < self._taken + self._window
            ):
                number = self._sent
                self._sent += 1
                worker.tasks.append(number)
                assert worker.proc.stdin is not None
                try:
                    wire.send(worker.proc.stdin,
                              [number, wire.encode_items(self._tasks[number])])
                except OSError:  # it died: the writer does this task, its reader the rest
                    worker.alive = False
                    worker.tasks.remove(number)
                    self._done[number] = None
                    self._cond.notify_all()
        if self._tasks and self._sent == len(self._tasks):
            # Nothing more to send: end their input now, so that they exit while the
            # last outcomes are written rather than after.
            for worker in self._workers:
                _end_input(worker.proc)

    def _read(self, worker: _Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        try:
            while (message := wire.receive(stdout)) is not None:
                number, raw = message
                outcomes = None if raw is None else [wire.decode_outcome(o) for o in raw]
                with self._cond:
                    worker.tasks.remove(number)
                    self._done[number] = outcomes
                    self._feed()
                    self._cond.notify_all()
        except Exception:  # a broken pipe or message: its tasks are done here instead
            log.debug("reading from an indexing worker failed", exc_info=True)
        finally:
            with self._cond:
                if worker.tasks:
                    log.warning("an indexing worker stopped (exit code %s); its files are "
                                "chunked in the indexer", worker.proc.poll())
                worker.alive = False
                for number in worker.tasks:
                    self._done[number] = None  # the writer does these itself
                worker.tasks.clear()
                self._feed()  # what this worker would have taken goes to the others
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the workers: at once if tasks are left (an error), else when they exit."""
        with self._cond:  # _feed may close their input too
            unfinished = self._taken < len(self._tasks)
            for worker in self._workers:
                worker.alive = False
                if unfinished:
                    worker.proc.kill()
                _end_input(worker.proc)
        for worker in self._workers:
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        for reader in self._readers:
            reader.join()
        for worker in self._workers:
            if worker.proc.stdout is not None:
                worker.proc.stdout.close()
