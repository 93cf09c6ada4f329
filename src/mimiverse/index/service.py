"""The codebase service: index jobs per repository, background embedding, hybrid search.

Lexical indexing runs in a worker thread; as soon as it has committed files they are
searchable. Embeddings are computed afterwards in batches through the router's embedding
backends, and searches use vectors as they arrive: hybrid search over a partly embedded
index simply fuses what each signal finds.

Where jobs live: with the SQLite store, in this process (each process knows the
repositories it was asked to index). With the PostgreSQL store, one store holds every
repository and the jobs are rows (index/replicas.py): every replica and worker searches
every repository of the store, and runs or takes over jobs one at a time per repository.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mimiverse.config import IndexSettings
from mimiverse.errors import (
    BackendError,
    CodeIndexError,
    Forbidden,
    InvalidRequest,
    MimiverseError,
    NotReady,
)
from mimiverse.index.chunker import embedding_text
from mimiverse.index.fusion import fuse
from mimiverse.index.indexer import Indexer, IndexReport
from mimiverse.index.model import Hit, SearchFilter
from mimiverse.index.ranking import (
    Priors,
    boost_lexical,
    cap_per_file,
    demote_tests,
    one_per_definition,
)
from mimiverse.index.replicas import ReplicaJobs
from mimiverse.index.store import open_store
from mimiverse.index.store.base import IndexStore
from mimiverse.index.tokenize import query_tokens
from mimiverse.routing.router import Router
from mimiverse.security import current_principal, inside_any

log = logging.getLogger("mimiverse.index")

Mode = Literal["lexical", "vector", "hybrid"]
State = Literal["indexing", "ready", "error"]
CANDIDATES = 50  # per signal, before fusion, priors and grouping


class PathNotAllowed(Forbidden):
    """403: the path resolves (after `..` and symlinks) outside `[index] allowed_roots`
    or the repositories of the request's team."""


class RepoNotIndexed(InvalidRequest):
    """404: the named repository is not one this server has indexed."""

    status_code = 404


def _refuse_odd(path: str, what: str, error: type[InvalidRequest] = InvalidRequest) -> None:
    """Refuse what a path of ours never holds: NUL bytes (the OS cannot take them) and a
    leading `~` (the server's home directory is not the client's; nothing is expanded)."""
    if "\x00" in path:
        raise error(f"{what} must not contain a NUL byte")
    if path.startswith("~"):
        raise error(f"{what} must be absolute (`~` is not expanded), got {path!r}")


@dataclass(slots=True)
class Job:
    root: Path
    store: IndexStore
    repo: int
    state: State = "indexing"
    error: str | None = None
    embedding_error: str | None = None
    report: IndexReport | None = None
    skipped: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    lexical_done: asyncio.Event = field(default_factory=asyncio.Event)  # per run


@dataclass(slots=True)
class SearchResult:
    hits: list[Hit]
    took_ms: float
    mode: Mode
    notes: list[str]


class CodebaseService:
    def __init__(
        self, settings: IndexSettings, router: Router, repos: Sequence[str] = ()
    ) -> None:
        """`repos`: folders the operator named (`serve --repo`, the CLI's path); with no
        `allowed_roots` configured, they and the user's home folder may be indexed."""
        self.settings = settings
        self.router = router
        self.jobs: dict[Path, Job] = {}
        configured = settings.allowed_roots
        roots = configured or [*repos, str(Path.home())]
        self.allowed_roots = [Path(a).expanduser().resolve() for a in roots]
        self.priors = Priors(settings.symbol_boost, settings.path_boost,
                             settings.test_file_weight)
        # PostgreSQL: one store for every repository, and jobs shared with other replicas.
        self.shared: IndexStore | None = None
        self.replicas: ReplicaJobs | None = None
        self._following: asyncio.Task[None] | None = None

    # -- indexing --------------------------------------------------------------------

    def resolve_root(self, path: str) -> Path:
        """The real folder `path` names: absolute, `..` and symlinks resolved, inside an
        allowed root when any are configured and among the team's repositories when the
        request comes from a team. Where it may not go is checked before whether it
        exists, so a refusal tells nothing about folders outside."""
        _refuse_odd(path, "path")
        root = Path(path)
        if not root.is_absolute():
            raise InvalidRequest(f"path must be absolute, got {path!r}")
        root = root.resolve()
        if not inside_any(root, self.allowed_roots):
            raise PathNotAllowed(f"path {path!r} is outside the allowed roots: "
                                 f"{', '.join(map(str, self.allowed_roots))}")
        principal = current_principal.get()
        if not principal.may_use(root):
            raise PathNotAllowed(f"path {path!r} is outside the repositories of team "
                                 f"{principal.team!r}: {', '.join(principal.repos) or 'none'}")
        if not root.is_dir():
            raise InvalidRequest(f"path {path!r} is not a directory on this server")
        return root

    async def job(self, path: str) -> Job:
        """The job (store, state) of the repository at `path`, opened on first use."""
        # Resolving touches the file system (symlinks, a slow mount): never on the loop.
        root = await asyncio.to_thread(self.resolve_root, path)
        job = self.jobs.get(root)
        if job is None:
            store = await self._store(root)
            repo = await asyncio.to_thread(store.repo_id, str(root))
            job = self.jobs.setdefault(root, Job(root=root, store=store, repo=repo))
        return job

    async def open(self, path: str) -> Job:
        """Open the repository at `path` for search without indexing it (another worker
        does): shown as ready, as far as that worker has indexed it."""
        job = await self.job(path)
        if job.task is None:
            job.state = "ready"
        return job

    async def _store(self, root: Path) -> IndexStore:
        if self.settings.store != "postgres":
            return await asyncio.to_thread(open_store, self.settings, root)
        if self.shared is None:
            store = await asyncio.to_thread(open_store, self.settings, root)
            if self.shared is None:
                self.shared = store
            else:  # opened twice concurrently: keep one
                await asyncio.to_thread(store.close)
        return self.shared

    async def follow(self) -> None:
        """PostgreSQL: start following the store's repositories and jobs (see
        index/replicas.py); SQLite: nothing (jobs stay in this process). A database that
        is not up yet is waited for in the background: the server starts regardless."""
        if self.settings.store == "postgres" and self._following is None:
            self._following = asyncio.create_task(self._follow(), name="follow index jobs")

    async def _follow(self) -> None:
        while True:
            try:
                replicas = await self._replicas()
                break
            except CodeIndexError as exc:
                log.warning("index jobs: %s; trying again", exc)
                await asyncio.sleep(max(self.settings.job_poll_s, 5.0))
        if replicas is None or self.shared is None:
            return
        store = self.shared

        def make_job(root: Path, repo: int) -> Job:
            return Job(root=root, store=store, repo=repo)

        await replicas.follow(self.jobs, make_job, self._launch)

    async def _replicas(self) -> ReplicaJobs | None:
        """The shared jobs (PostgreSQL), opened on first use; None with SQLite."""
        if self.replicas is None and self.settings.store == "postgres":
            from mimiverse.index.store.postgres import PostgresStore  # the [postgres] extra

            store = await self._store(Path("/"))  # one store for all: the root is unused
            if isinstance(store, PostgresStore) and self.replicas is None:
                self.replicas = ReplicaJobs(store.jobs(), self.settings, self.allowed_roots)
        return self.replicas

    async def start(self, path: str) -> Job:
        """Start (or restart, if idle) indexing of the repository at `path`. With shared
        jobs it is queued; this replica runs it unless another one already does."""
        job = await self.job(path)
        if job.task is not None and not job.task.done():
            return job  # already running: the caller polls its status
        replicas = await self._replicas()
        if replicas is not None:
            job.state, job.error = "indexing", None
            if await replicas.request(job):
                self._launch(job)
            return job
        self._launch(job)
        return job

    def _launch(self, job: Job) -> None:
        job.state, job.error = "indexing", None
        job.lexical_done.clear()
        run = self._run(job)
        if self.replicas is not None:
            run = self.replicas.run(job, run)
        job.task = asyncio.create_task(run, name=f"index {job.root}")

    async def _run(self, job: Job) -> None:
        try:
            indexer = Indexer(job.store, job.root, self.settings)
            job.report = await asyncio.to_thread(indexer.run)
            job.state = "ready"
            log.info("indexed %s: %d files, %d chunks in %.0f ms", job.root,
                     job.report.files, job.report.chunks, job.report.took_ms)
        except MimiverseError as exc:
            job.state, job.error = "error", str(exc)
            return
        except Exception as exc:  # a bug or I/O failure: report it, keep serving
            log.exception("indexing %s failed", job.root)
            job.state, job.error = "error", f"{type(exc).__name__}: {exc}"
            return
        finally:
            job.lexical_done.set()  # searchable (or failed): wake whoever waits for it
        if self.replicas is not None:
            await self.replicas.searchable(job)
        await self.embed_pending(job)

    async def embed_pending(self, job: Job) -> None:
        """Embed chunks without vectors, batch by batch, until none are left."""
        job.embedding_error = None
        try:
            await self._check_model(job)
            recorded = (await asyncio.to_thread(job.store.stats, job.repo)).embedding_dim
            while batch := await asyncio.to_thread(
                job.store.pending_embeddings, job.repo, self.settings.embed_batch
            ):
                chunks = await asyncio.to_thread(job.store.chunks, [cid for cid, _ in batch])
                texts = [embedding_text(c.path, c.symbol, c.text) if c is not None else text
                         for c, text in ((chunks.get(cid), text) for cid, text in batch)]
                vectors, backend, model = await self.router.embed(texts)
                _check_dimension(vectors, recorded, backend.name, model)
                pairs = [(cid, vec) for (cid, _), vec in zip(batch, vectors, strict=True)]
                await asyncio.to_thread(job.store.store_embeddings, job.repo, pairs)
        except (BackendError, CodeIndexError) as exc:
            job.embedding_error = str(exc)
            log.warning("embedding for %s paused: %s", job.root, exc)

    async def _check_model(self, job: Job) -> None:
        """A different model than the index was built with: drop the old vectors (the
        loop re-embeds them) rather than mix two vector spaces in one index."""
        model = self.router.route("embedding").model
        stats = await asyncio.to_thread(job.store.stats, job.repo)
        if stats.embedding_model == model or stats.chunks == 0:
            return
        [probe], _backend, model = await self.router.embed(["dimension probe"])
        await asyncio.to_thread(job.store.set_embedding_model, job.repo, model, len(probe))

    async def wait(self, root: Path) -> None:
        job = self.jobs[root]
        if job.task is not None:
            await job.task

    async def aclose(self) -> None:
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
        for job in self.jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
        await asyncio.gather(*(j.task for j in self.jobs.values() if j.task),
                             return_exceptions=True)
        stores = {id(j.store): j.store for j in self.jobs.values()}
        if self.shared is not None:
            stores[id(self.shared)] = self.shared
        for store in stores.values():
            await asyncio.to_thread(store.close)

    # -- search ----------------------------------------------------------------------

    def visible_jobs(self) -> dict[Path, Job]:
        """The repositories the request's principal may search (a team: its own)."""
        principal = current_principal.get()
        if principal.team is None:
            return self.jobs
        return {root: job for root, job in self.jobs.items() if principal.may_use(root)}

    def job_for(self, repo: str | None) -> Job:
        jobs = self.visible_jobs()
        if repo is None:
            if not jobs:
                raise NotReady("no repository is indexed yet: POST /api/codebase/index "
                               '{"path": "/abs/path"} or start with `mimiverse serve --repo PATH`')
            return next(iter(jobs.values()))
        _refuse_odd(repo, "repo", RepoNotIndexed)  # no such repository is indexed
        root = Path(repo).resolve() if Path(repo).is_absolute() else None
        if root is None or root not in jobs:
            # Another team's repository reads as not indexed: nothing says it exists.
            known = ", ".join(str(r) for r in jobs) or "none"
            raise RepoNotIndexed(f"repository {repo!r} is not indexed here; indexed: {known}")
        return jobs[root]

    async def search(
        self, query: str, *, limit: int = 10, mode: Mode = "hybrid",
        where: SearchFilter | None = None, repo: str | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        where = where or SearchFilter()
        job = self.job_for(repo)
        notes: list[str] = []
        terms = query_tokens(query)

        async def lexical() -> list[tuple[int, float]] | None:
            if not terms:
                notes.append("the query has no searchable terms")
                return None
            return await asyncio.to_thread(
                job.store.search_lexical, job.repo, terms, CANDIDATES, where
            )

        async def vector() -> list[tuple[int, float]] | None:
            try:
                [vector], _backend, _model = await self.router.embed([query])
            except BackendError as exc:
                if mode == "vector":
                    raise
                notes.append(f"vector search unavailable, lexical only: {exc}")
                return None
            return await asyncio.to_thread(
                job.store.search_vector, job.repo, vector, CANDIDATES, where
            )

        # Hybrid: the full-text search runs while the query is being embedded.
        signals = [(name, run) for name, run in (("lexical", lexical), ("vector", vector))
                   if mode in (name, "hybrid")]
        found = await asyncio.gather(*(run() for _, run in signals))
        ranked = {name: hits for (name, _), hits in zip(signals, found, strict=True)
                  if hits is not None}
        ids = list(dict.fromkeys(cid for hits in ranked.values() for cid, _ in hits))
        chunks = await asyncio.to_thread(job.store.chunks, ids)  # a deleted one is missing
        if "lexical" in ranked:
            ranked["lexical"] = boost_lexical(ranked["lexical"], chunks, terms, self.priors)
        ranked = {name: [h for h in hits if h[0] in chunks] for name, hits in ranked.items()}
        s = self.settings
        fused = fuse(ranked, method=s.fusion, k=s.rrf_k,
                     weights={"lexical": s.lexical_weight, "vector": s.vector_weight})
        fused = demote_tests(fused, lambda cid: chunks[cid].path, terms,
                             self.priors.test_file_weight)
        fused = one_per_definition(fused, chunks)
        fused = cap_per_file(fused, lambda cid: chunks[cid].path, s.max_hits_per_file)
        hits = [Hit(chunks[f.id], round(f.score, 6), f.signals) for f in fused[:limit]]
        return SearchResult(hits, round((time.perf_counter() - started) * 1000, 2), mode, notes)


def _check_dimension(vectors: list[list[float]], recorded: int | None, backend: str,
                     model: str) -> None:
    """Refuse vectors whose dimension differs from the index's: they come from another
    model than the one the index records (e.g. a fallback backend serving a different
    model under the same name), and mixing two vector spaces would corrupt search."""
    if recorded is None or not vectors or len(vectors[0]) == recorded:
        return
    raise CodeIndexError(
        f"backend {backend!r} returned {len(vectors[0])}-dimensional vectors for model "
        f"{model!r}, but this index holds {recorded}-dimensional ones: it serves another "
        "model under that name; nothing was stored (point models.embedding at backends "
        "that serve the same model, or rename the model to re-embed the index)"
    )
