"""`mimiverse index` and `mimiverse search`: the code index from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mimiverse.backends.registry import build_backend
from mimiverse.cli.common import ConfigOption, console, fail, run, settings_from
from mimiverse.config import Settings
from mimiverse.index.indexer import Indexer, IndexReport
from mimiverse.index.model import SearchFilter
from mimiverse.index.service import CodebaseService
from mimiverse.routing.router import Router


def _router(settings: Settings) -> Router:
    return Router(settings, {b.name: build_backend(b) for b in settings.backends})


def _print_report(report: IndexReport) -> None:
    skipped = ", ".join(f"{why} {n}" for why, n in sorted(report.skipped.items())) or "none"
    redacted = ", ".join(f"{kind} {n}" for kind, n in sorted(report.redacted.items())) or "none"
    console.print(
        f"[bold]{report.root}[/]: {report.files} files, {report.chunks} chunks "
        f"({report.indexed} indexed, {report.unchanged} unchanged, {report.deleted} removed) "
        f"in {report.took_ms / 1000:.2f} s; skipped: {skipped}; secrets redacted: {redacted}",
        highlight=False, soft_wrap=True,
    )


async def _index_once(service: CodebaseService, root: Path, embed: bool) -> IndexReport:
    job = await service.job(str(root))  # the CLI drives the steps, with a progress bar
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("indexing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        indexer = Indexer(job.store, root, service.settings)
        report = await asyncio.to_thread(indexer.run, progress=progress)
        job.report, job.state = report, "ready"
        if embed:
            stats = await asyncio.to_thread(job.store.stats, job.repo)
            bar.update(task, description="embedding", completed=0,
                       total=stats.pending_embeddings)
            embedding = asyncio.create_task(service.embed_pending(job))
            while not embedding.done():
                await asyncio.sleep(0.2)
                stats = await asyncio.to_thread(job.store.stats, job.repo)
                bar.update(task, completed=(bar.tasks[0].total or 0) - stats.pending_embeddings)
            await embedding
    _print_report(report)
    if job.embedding_error:
        console.print(f"[yellow]embeddings paused:[/] {job.embedding_error}", highlight=False)
    return report


def index(
    path: Annotated[Path, typer.Argument(help="repository root", file_okay=False)] = Path("."),
    watch: Annotated[bool, typer.Option(help="keep the index current as files change")] = False,
    embed: Annotated[bool, typer.Option(help="compute embeddings after the lexical pass")] = True,
    config: ConfigOption = None,
) -> None:
    """Index a repository (incrementally): searchable lexically at once, vectors after."""
    settings = settings_from(config)
    root = path.resolve()
    if not root.is_dir():
        raise fail(f"{path} is not a directory")

    async def go() -> None:
        router = _router(settings)
        service = CodebaseService(settings.index, router, [str(root)])
        try:
            await _index_once(service, root, embed)
            if watch:
                await _watch(service, root, embed)
        finally:
            await service.aclose()
            await router.aclose()

    run(go())


async def _watch(service: CodebaseService, root: Path, embed: bool) -> None:
    from watchfiles import awatch  # uvicorn[standard] brings it; only --watch needs it

    console.print(f"watching {root} (Ctrl-C to stop)", highlight=False)
    ignored = {".git", ".mimiverse"}
    first = True
    # yield_on_timeout: the first (possibly empty) batch arrives once the watcher is live;
    # indexing again then catches edits made between the first run and the watch start.
    async for changes in awatch(root, debounce=300, step=100, yield_on_timeout=True,
                                rust_timeout=500):
        paths = [Path(p) for _, p in changes]
        ours = all(ignored & set(p.relative_to(root).parts)
                   for p in paths if p.is_relative_to(root))
        if first or (paths and not ours):  # skip our own index writes and git internals
            await _index_once(service, root, embed)
        first = False


def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    path: Annotated[Path, typer.Option("--repo", help="indexed repository root")] = Path("."),
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    mode: Annotated[str, typer.Option(help="lexical | vector | hybrid")] = "hybrid",
    path_glob: Annotated[str | None, typer.Option("--glob", help='e.g. "src/**/*.py"')] = None,
    language: Annotated[str | None, typer.Option(help="e.g. python")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    config: ConfigOption = None,
) -> None:
    """Search an indexed repository (run `mimiverse index` first)."""
    if mode not in ("lexical", "vector", "hybrid"):
        raise fail(f"mode must be lexical, vector or hybrid, not {mode!r}")
    settings = settings_from(config)
    root = path.resolve()

    async def go() -> None:
        router = _router(settings)
        service = CodebaseService(settings.index, router, [str(root)])
        try:
            job = await service.job(str(root))  # search what is indexed; no re-index
            job.state = "ready"
            stats = await asyncio.to_thread(job.store.stats, job.repo)
            if stats.files == 0:
                raise fail(f"{root} is not indexed yet: run `mimiverse index {path}`")
            m: Literal["lexical", "vector", "hybrid"] = mode  # type: ignore[assignment]
            result = await service.search(
                query, limit=limit, mode=m,
                where=SearchFilter(path_glob=path_glob, language=language),
            )
        finally:
            await service.aclose()
            await router.aclose()
        if as_json:
            print(orjson.dumps({
                "results": [{
                    "path": h.chunk.path, "start_line": h.chunk.start_line,
                    "end_line": h.chunk.end_line, "symbol": h.chunk.symbol,
                    "language": h.chunk.language, "score": h.score, "signals": h.signals,
                    "snippet": h.chunk.text,
                } for h in result.hits],
                "took_ms": result.took_ms, "notes": result.notes,
            }, option=orjson.OPT_INDENT_2).decode())
            return
        table = Table(title=f"{query!r}: {len(result.hits)} results in {result.took_ms:.1f} ms")
        for col in ("#", "where", "symbol", "score", "why"):
            table.add_column(col, no_wrap=col in ("where", "symbol"))
        table.add_column("first line", overflow="ellipsis", no_wrap=True)
        for i, h in enumerate(result.hits, start=1):
            why = " ".join(f"{s}#{int(v['rank'])}" for s, v in h.signals.items())
            first = next((ln.strip() for ln in h.chunk.text.splitlines() if ln.strip()), "")
            table.add_row(str(i), f"{h.chunk.path}:{h.chunk.start_line}-{h.chunk.end_line}",
                          h.chunk.symbol or "", f"{h.score:.4f}", why, first[:60])
        console.print(table)
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)

    run(go())
