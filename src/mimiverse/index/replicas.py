"""Index jobs shared by replicas through the PostgreSQL store (index/store/pg_jobs.py).

Every replica (or worker) follows the store: each `job_poll_s` it lists the store's
repositories and their jobs, so a repository indexed anywhere is searchable (and feeds
repository context) here too, with the state its runner wrote; and it claims one due job
(queued, or left by a replica that died), which it runs under a lease it keeps renewing.

Why a lease row, not a job queue library: a repository has one job at a time whose state
every replica must show, which is exactly one row per repository; a dead runner is
noticed by its lease running out, which a queue library (procrastinate, for one) leaves
to a periodic task of ours anyway; and the row lives in the store's own connections and
migrations. This is about 200 lines with the SQL; the store's writer lock (dropped by the
server with a dead connection) still makes two runs on one repository impossible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimiverse.errors import CodeIndexError
from mimiverse.index.indexer import IndexReport
from mimiverse.security import inside_any

if TYPE_CHECKING:
    from mimiverse.config import IndexSettings
    from mimiverse.index.service import Job, State
    from mimiverse.index.store.pg_jobs import JobRow, PostgresJobs

log = logging.getLogger("mimiverse.index")

# The row's state as the status API shows it: "ready" once files are searchable.
SHOWN: dict[str | None, State] = {
    None: "ready", "queued": "indexing", "indexing": "indexing", "embedding": "ready",
    "ready": "ready", "error": "error",
}


def report_json(report: IndexReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    data = asdict(report)
    data["skipped"] = dict(report.skipped)
    return data


def report_of(data: dict[str, Any] | None) -> IndexReport | None:
    if not data:
        return None
    fields = {k: v for k, v in data.items() if k in IndexReport.__dataclass_fields__}
    fields["skipped"] = Counter(fields.get("skipped") or {})
    return IndexReport(**fields)


class ReplicaJobs:
    """This replica's part: follow the store's jobs, claim due ones, keep their leases."""

    def __init__(self, table: PostgresJobs, settings: IndexSettings,
                 allowed_roots: list[Path]) -> None:
        """`allowed_roots`: the folders this replica may index (CodebaseService's)."""
        self.table = table
        self.lease_s = settings.job_lease_s
        self.poll_s = settings.job_poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.allowed_roots = allowed_roots
        self.unreachable: set[int] = set()  # roots this replica cannot read or may not use

    def allows(self, root: Path) -> bool:
        """This replica's allowed roots hold for repositories others added too."""
        return inside_any(root, self.allowed_roots)

    async def request(self, job: Job) -> bool:
        """Queue `job`'s repository; True when this replica got to run it."""
        await asyncio.to_thread(self.table.request, job.repo)
        return await asyncio.to_thread(self.table.claim, self.owner, self.lease_s,
                                       job.repo) is not None

    async def follow(self, jobs: dict[Path, Job], make_job: Callable[[Path, int], Job],
                     launch: Callable[[Job], None]) -> None:
        """Forever: mirror the store's repositories into `jobs`, launch claimed ones."""
        while True:
            try:
                await self._step(jobs, make_job, launch)
            except CodeIndexError as exc:  # the database is away: try again next time
                log.warning("following index jobs: %s", exc)
            await asyncio.sleep(self.poll_s)

    async def _step(self, jobs: dict[Path, Job], make_job: Callable[[Path, int], Job],
                    launch: Callable[[Job], None]) -> None:
        rows: list[JobRow] = await asyncio.to_thread(self.table.rows)
        for row in rows:
            root = Path(row.root)
            if not self.allows(root):
                self.unreachable.add(row.repo)
                continue
            job = jobs.get(root) or jobs.setdefault(root, make_job(root, row.repo))
            if job.task is None or job.task.done():  # run elsewhere (or finished): the row
                job.state, job.error = SHOWN.get(row.state, "ready"), row.error
                job.embedding_error = row.embedding_error
                job.report = report_of(row.report) or job.report
        running = tuple(j.repo for j in jobs.values() if j.task and not j.task.done())
        claimed = await asyncio.to_thread(self.table.claim, self.owner, self.lease_s, None,
                                          running + tuple(self.unreachable))
        if claimed is None:
            return
        repo, root_text = claimed
        root = Path(root_text)
        if not self.allows(root) or not root.is_dir():
            log.warning("index job for %s: not a folder this replica may index; left to "
                        "others", root)
            self.unreachable.add(repo)
            await asyncio.to_thread(self.table.release, repo, self.owner)
            return
        launch(jobs.get(root) or jobs.setdefault(root, make_job(root, repo)))

    async def run(self, job: Job, body: Awaitable[None]) -> None:
        """Run `body` (the index run) under the job's lease, then record how it ended; a
        run cancelled here (shutdown) is given back for another replica at once."""
        keeper = asyncio.create_task(self._keep(job), name=f"lease {job.root}")
        finished = False
        try:
            await body
            finished = True
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            if finished:
                await asyncio.to_thread(
                    self.table.finish, job.repo, self.owner,
                    "error" if job.state == "error" else "ready", job.error, job.embedding_error)
            else:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.table.release, job.repo, self.owner)

    async def searchable(self, job: Job) -> None:
        """Lexical indexing is done: other replicas show it ready (and its report) now."""
        await asyncio.to_thread(self.table.renew, job.repo, self.owner, self.lease_s,
                                "embedding", report_json(job.report))

    async def _keep(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                kept = await asyncio.to_thread(self.table.renew, job.repo, self.owner,
                                               self.lease_s)
            except CodeIndexError as exc:
                log.warning("renewing the index job lease of %s: %s", job.root, exc)
                continue
            if not kept:
                log.warning("index job of %s: lease lost to another replica", job.root)
                return
