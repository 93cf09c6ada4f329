"""One replica's view of the shared jobs (index/replicas.py) on a real PostgreSQL store:
what it mirrors, what it claims, what it leaves to others."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mimiverse.config import IndexSettings, load_settings
from mimiverse.index.indexer import IndexReport
from mimiverse.index.replicas import ReplicaJobs, report_json, report_of
from mimiverse.index.service import CodebaseService, Job
from mimiverse.index.store.postgres import PostgresStore
from mimiverse.index.tokenize import tokens
from mimiverse.routing.router import Router


async def test_a_replica_mirrors_and_claims_only_what_it_may_index(
    postgres_conninfo: str, tmp_path: Path
) -> None:
    store = PostgresStore(postgres_conninfo, tokenizer=tokens)
    try:
        mine, gone = tmp_path / "repos" / "mine", tmp_path / "repos" / "gone"
        theirs = tmp_path / "other"
        mine.mkdir(parents=True)
        theirs.mkdir()
        ids = {p: store.repo_id(str(p)) for p in (mine, theirs, gone)}
        table = store.jobs()
        for repo in ids.values():
            table.request(repo)
        settings = IndexSettings(store="postgres", url=postgres_conninfo)
        replica = ReplicaJobs(table, settings, [(tmp_path / "repos").resolve()])
        jobs: dict[Path, Job] = {}
        launched: list[Path] = []

        def make_job(root: Path, repo: int) -> Job:
            return Job(root=root, store=store, repo=repo)

        def launch(job: Job) -> None:
            launched.append(job.root)

        for _ in range(3):
            await replica._step(jobs, make_job, launch)
        # Outside its allowed roots: neither shown nor run. Not a folder here: shown
        # (another replica may run it) but given back, not run.
        assert set(jobs) == {mine, gone}
        assert launched == [mine]
        rows = {row.root: row for row in table.rows()}
        assert (rows[str(mine)].state, rows[str(mine)].owner) == ("indexing", replica.owner)
        assert (rows[str(gone)].state, rows[str(gone)].owner) == ("queued", None)
        assert (rows[str(theirs)].state, rows[str(theirs)].owner) == ("queued", None)
        assert jobs[gone].state == "indexing"  # queued: shown as indexing
    finally:
        store.close()


def test_reports_travel_as_json() -> None:
    report = IndexReport(root="/r", files=3, chunks=9, indexed=3, took_ms=12.5)
    report.skipped["binary"] = 2
    data = report_json(report)
    assert data is not None and data["skipped"] == {"binary": 2}
    assert report_of(data) == report
    assert report_of(None) is None and report_json(None) is None


async def test_the_server_starts_while_postgresql_is_down(tmp_path: Path) -> None:
    settings = IndexSettings(store="postgres",
                             url=f"postgresql:///x?host={tmp_path}&connect_timeout=2")
    service = CodebaseService(settings, Router(load_settings(None), {}))
    await service.follow()  # returns at once; the database is waited for in the background
    following = service._following
    assert following is not None
    await asyncio.sleep(0.05)
    assert not following.done() and service.replicas is None
    await service.aclose()
    assert following.cancelled()
