"""/api/codebase/search, /api/codebase/index and /api/codebase/status."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mimiverse.api.errors import BACKEND_ERRORS, COMMON_ERRORS, error_responses
from mimiverse.api.limits import NumbersNotBooleans
from mimiverse.index.model import SearchFilter
from mimiverse.index.service import CodebaseService, Job

# 404: a repository that is not indexed here; 409: none is indexed yet; 5xx: the query's
# embedding failed (vector mode) or the store failed.
router = APIRouter(prefix="/api/codebase", tags=["codebase"],
                   responses=error_responses(*COMMON_ERRORS, 404, 409, 500, *BACKEND_ERRORS))


async def get_codebase(request: Request) -> CodebaseService:
    service: CodebaseService = request.app.state.codebase
    return service


CodebaseDep = Annotated[CodebaseService, Depends(get_codebase)]


class SearchBody(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid")  # refused, naming them (422)

    query: str = Field(min_length=1, max_length=2000)
    limit: int = Field(10, ge=1, le=100)
    mode: Literal["lexical", "vector", "hybrid"] = "hybrid"
    path_glob: str | None = Field(None, max_length=256, description='e.g. "src/**/*.py"')
    language: str | None = Field(None, max_length=32, pattern=r"^[a-z0-9_+#\-]+$")
    repo: str | None = Field(None, max_length=4096, description="an indexed root; default: first")

    @field_validator("path_glob")
    @classmethod
    def _inside_the_repository(cls, glob: str | None) -> str | None:
        # The glob only filters paths already in the index (relative to its root; a leading
        # `/` anchors there), so it cannot read anything; still, a glob that tries to climb
        # out says the client means something we do not do: refuse it plainly.
        if glob is None:
            return None
        if "\x00" in glob:
            raise ValueError("must not contain a NUL byte")
        if glob.startswith("~") or ".." in glob.replace("\\", "/").split("/"):
            raise ValueError("must stay inside the repository (no `..` or `~`)")
        return glob


class Signal(BaseModel):
    rank: int
    score: float


class Result(BaseModel):
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    language: str | None
    snippet: str
    score: float
    signals: dict[str, Signal]


class SearchResponse(BaseModel):
    results: list[Result]
    took_ms: float
    mode: str
    notes: list[str]


class IndexBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # refused, naming them (422)

    path: str = Field(min_length=1, max_length=4096, description="absolute repository path")


class Status(BaseModel):
    root: str
    state: Literal["indexing", "ready", "error"]
    files: int
    chunks: int
    pending_embeddings: int
    embedding_model: str | None
    embedding_dim: int | None
    skipped: dict[str, int]
    redacted: dict[str, int] = Field(description="secrets replaced by the last run, by kind")
    took_ms: float | None
    error: str | None
    embedding_error: str | None


async def status_of(job: Job) -> Status:
    # The job's state before the store's counts: "ready" then always comes with the
    # finished run's files and chunks, even when the run ends while the counts are read.
    state, error, report = job.state, job.error, job.report
    stats = await asyncio.to_thread(job.store.stats, job.repo)
    return Status(
        root=str(job.root), state=state, files=stats.files, chunks=stats.chunks,
        pending_embeddings=stats.pending_embeddings, embedding_model=stats.embedding_model,
        embedding_dim=stats.embedding_dim, skipped=dict(report.skipped) if report else {},
        redacted=dict(report.redacted) if report else {},
        took_ms=report.took_ms if report else None, error=error,
        embedding_error=job.embedding_error,
    )


@router.post("/search")
async def search(body: SearchBody, codebase: CodebaseDep) -> SearchResponse:
    result = await codebase.search(
        body.query, limit=body.limit, mode=body.mode, repo=body.repo,
        where=SearchFilter(path_glob=body.path_glob, language=body.language),
    )
    return SearchResponse(
        results=[
            Result(
                path=h.chunk.path, start_line=h.chunk.start_line, end_line=h.chunk.end_line,
                symbol=h.chunk.symbol, language=h.chunk.language, snippet=h.chunk.text,
                score=h.score,
                signals={k: Signal(rank=int(v["rank"]), score=v["score"])
                         for k, v in h.signals.items()},
            )
            for h in result.hits
        ],
        took_ms=result.took_ms, mode=result.mode, notes=result.notes,
    )


@router.post("/index", status_code=202)
async def index(body: IndexBody, codebase: CodebaseDep) -> Status:
    """Start or refresh the index of a repository; poll GET /api/codebase/status."""
    return await status_of(await codebase.start(body.path))


@router.get("/status")
async def status(
    codebase: CodebaseDep, repo: Annotated[str | None, Query(max_length=4096)] = None
) -> Status:
    return await status_of(codebase.job_for(repo))
