"""Index jobs as rows (index/store/pg_jobs.py): one runner per repository, leases that
run out, and requests made during a run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mimiverse.index.store.pg_jobs import PostgresJobs
from mimiverse.index.store.postgres import PostgresStore
from mimiverse.index.tokenize import tokens


@pytest.fixture
def store(postgres_conninfo: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(postgres_conninfo, tokenizer=tokens)
    yield opened
    opened.close()


def test_one_runner_per_repository_and_the_oldest_job_first(store: PostgresStore) -> None:
    jobs = store.jobs()
    alpha, beta = store.repo_id("/repos/alpha"), store.repo_id("/repos/beta")
    assert jobs.claim("r1", 30) is None  # nothing queued
    jobs.request(alpha)
    jobs.request(beta)
    assert jobs.claim("r1", 30) == (alpha, "/repos/alpha")
    # Another replica gets the next due job, never the one r1 runs.
    assert jobs.claim("r2", 30, alpha) is None
    assert jobs.claim("r2", 30) == (beta, "/repos/beta")
    assert jobs.claim("r3", 30) is None
    rows = {row.root: row for row in jobs.rows()}
    assert (rows["/repos/alpha"].state, rows["/repos/alpha"].owner) == ("indexing", "r1")
    assert (rows["/repos/beta"].state, rows["/repos/beta"].owner) == ("indexing", "r2")


def test_a_lease_that_runs_out_is_taken_over(store: PostgresStore) -> None:
    jobs = store.jobs()
    repo = store.repo_id("/repos/alpha")
    jobs.request(repo)
    assert jobs.claim("dead", 0) == (repo, "/repos/alpha")  # a lease of 0 s: over at once
    assert jobs.claim("alive", 30) == (repo, "/repos/alpha")
    # The first runner finds out at its next renewal and its end changes nothing.
    assert jobs.renew(repo, "dead", 30) is False
    jobs.finish(repo, "dead", "error", "late", None)
    [row] = jobs.rows()
    assert (row.state, row.owner, row.error) == ("indexing", "alive", None)
    assert jobs.renew(repo, "alive", 30, "embedding", {"files": 3}) is True
    jobs.finish(repo, "alive", "ready", None, None)
    [row] = jobs.rows()
    assert (row.state, row.owner, row.report) == ("ready", None, {"files": 3})


def test_a_request_during_a_run_queues_it_again_and_release_gives_it_back(
    store: PostgresStore,
) -> None:
    jobs = store.jobs()
    repo = store.repo_id("/repos/alpha")
    jobs.request(repo)
    assert jobs.claim("r1", 30) is not None
    jobs.request(repo)  # files changed while r1 indexes
    [row] = jobs.rows()
    assert (row.state, row.owner) == ("indexing", "r1")  # still r1's
    jobs.finish(repo, "r1", "ready", None, None)
    [row] = jobs.rows()
    assert (row.state, row.owner) == ("queued", None)
    assert jobs.claim("r2", 30) is not None
    jobs.release(repo, "r2")  # shutting down: due again at once
    assert jobs.claim("r3", 30) == (repo, "/repos/alpha")


def test_rows_list_repositories_indexed_without_a_job(store: PostgresStore) -> None:
    repo = store.repo_id("/repos/cli-indexed")
    [row] = store.jobs().rows()
    assert (row.repo, row.root, row.state) == (repo, "/repos/cli-indexed", None)
    assert isinstance(store.jobs(), PostgresJobs)
