"""Index jobs as rows of the PostgreSQL store: any replica sees them, one runs each.

One row per repository (`index_jobs`) holds its latest job: queued, then indexing and
embedding under a lease (`owner`, `lease_until`) that its runner renews, then ready or
error. A replica claims the oldest due job with `FOR UPDATE SKIP LOCKED`: queued, or
leased by a runner that stopped renewing (a replica that died). So each repository has
at most one runner, and an interrupted job resumes elsewhere once its lease runs out
(indexing is incremental: what the dead run committed stays). The store's writer lock
(an advisory lock the server drops with a dead connection) still guards the writes.

A request while a job runs sets `again`: the job is queued once more when it finishes,
so changes made during a run are indexed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg is the [postgres] extra: imported only by who uses the store
    import psycopg
    from psycopg.rows import TupleRow

    Connection = psycopg.Connection[TupleRow]


@dataclass(frozen=True, slots=True)
class JobRow:
    repo: int
    root: str
    state: str | None  # None: indexed before jobs were rows (or by the CLI)
    owner: str | None
    error: str | None
    embedding_error: str | None
    report: dict[str, Any] | None


_CLAIM = """
UPDATE index_jobs j SET state = 'indexing', owner = %(owner)s,
    lease_until = now() + make_interval(secs => %(lease)s), started_at = now(),
    runs = j.runs + 1, again = false, error = NULL, embedding_error = NULL
FROM (
    SELECT repo FROM index_jobs
    WHERE (state = 'queued' OR (state IN ('indexing', 'embedding') AND lease_until < now()))
      AND (%(repo)s::bigint IS NULL OR repo = %(repo)s) AND NOT repo = ANY(%(skip)s::bigint[])
    ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED
) due, repos r
WHERE j.repo = due.repo AND r.id = j.repo
RETURNING j.repo, r.root
"""


class PostgresJobs:
    def __init__(self, connection: Callable[[], AbstractContextManager[Connection]]) -> None:
        """`connection`: the store's pooled connections (PostgresStore.jobs())."""
        self._conn = connection

    def request(self, repo: int) -> None:
        """Queue an index job for `repo`; one that runs now runs again when it finishes."""
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO index_jobs (repo, state) VALUES (%(r)s, 'queued')"
                " ON CONFLICT (repo) DO UPDATE SET"
                " again = index_jobs.state IN ('indexing', 'embedding'),"
                " state = CASE WHEN index_jobs.state IN ('indexing', 'embedding')"
                "   THEN index_jobs.state ELSE 'queued' END,"
                " requested_at = CASE WHEN index_jobs.state IN ('indexing', 'embedding')"
                "   THEN index_jobs.requested_at ELSE now() END",
                {"r": repo},
            )

    def claim(self, owner: str, lease_s: float, repo: int | None = None,
              skip: tuple[int, ...] = ()) -> tuple[int, str] | None:
        """Take the oldest due job (of `repo` only, when given; none of `skip`):
        (repo, root), or None when no job is due or another replica holds it."""
        with self._conn() as conn:
            row = conn.execute(_CLAIM, {"owner": owner, "lease": lease_s, "repo": repo,
                                        "skip": list(skip)}).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def renew(self, repo: int, owner: str, lease_s: float, state: str | None = None,
              report: dict[str, Any] | None = None) -> bool:
        """Extend the lease (and move to `state`, with the run's report); False when the
        job is no longer this owner's (its lease ran out and another replica took it)."""
        from psycopg.types.json import Jsonb

        with self._conn() as conn:
            row = conn.execute(
                "UPDATE index_jobs SET lease_until = now() + make_interval(secs => %s),"
                " state = coalesce(%s, state), report = coalesce(%s, report)"
                " WHERE repo = %s AND owner = %s AND state IN ('indexing', 'embedding')"
                " RETURNING 1",
                (lease_s, state, None if report is None else Jsonb(report), repo, owner),
            ).fetchone()
        return row is not None

    def finish(self, repo: int, owner: str, state: str, error: str | None,
               embedding_error: str | None) -> None:
        """The run ended (`state`: ready or error); queued again if asked meanwhile."""
        with self._conn() as conn:
            conn.execute(
                "UPDATE index_jobs SET state = CASE WHEN again THEN 'queued' ELSE %s END,"
                " requested_at = CASE WHEN again THEN now() ELSE requested_at END,"
                " again = false, owner = NULL, lease_until = NULL, finished_at = now(),"
                " error = %s, embedding_error = %s WHERE repo = %s AND owner = %s",
                (state, error, embedding_error, repo, owner),
            )

    def release(self, repo: int, owner: str) -> None:
        """Give an unfinished job back (shutting down, or the root is not reachable
        here): queued for another replica at once, not after the lease."""
        with self._conn() as conn:
            conn.execute(
                "UPDATE index_jobs SET state = 'queued', owner = NULL, lease_until = NULL"
                " WHERE repo = %s AND owner = %s",
                (repo, owner),
            )

    def rows(self) -> list[JobRow]:
        """Every repository of the store with its latest job."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT r.id, r.root, j.state, j.owner, j.error, j.embedding_error, j.report"
                " FROM repos r LEFT JOIN index_jobs j ON j.repo = r.id ORDER BY r.id"
            ).fetchall()
        return [JobRow(int(r[0]), str(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]
