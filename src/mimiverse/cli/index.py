"""`mimiverse index` and `mimiverse search`: the code index from the command line."""

from __future__ import annotations

import asyncio
import time
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mimiverse.backends.registry import build_backend
from mimiverse.cli.common import (
    ConfigOption,
    console,
    err_console,
    existing_dir,
    fail,
    run,
    settings_from,
)
from mimiverse.config import Settings
from mimiverse.index.indexer import Indexer, IndexReport
from mimiverse.index.model import SearchFilter
from mimiverse.index.service import CodebaseService
from mimiverse.routing.router import Router


def _router(settings: Settings) -> Router:
    return Router(settings, {b.name: build_backend(b) for b in settings.backends})


def _print_report(report: IndexReport, total_s: float, embed_s: float | None) -> None:
    skipped = ", ".join(f"{why} {n}" for why, n in sorted(report.skipped.items())) or "none"
    redacted = ", ".join(f"{kind} {n}" for kind, n in sorted(report.redacted.items())) or "none"
    took = f"in {total_s:.2f} s (lexical {report.took_ms / 1000:.2f} s"
    took += f", embeddings {embed_s:.2f} s)" if embed_s is not None else ", no embeddings)"
    console.print(
        f"[bold]{report.root}[/]: {report.files} files, {report.chunks} chunks "
        f"({report.indexed} indexed, {report.unchanged} unchanged, {report.deleted} removed) "
        f"{took}; skipped: {skipped}; secrets redacted: {redacted}",
        highlight=False, soft_wrap=True,
    )


class _PlainProgress:
    """Progress as plain lines where no bar can be drawn (output piped or logged): the
    first and last step, and one line per 10% between."""

    def __init__(self) -> None:
        self._shown: dict[str, int] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if total <= 0:
            return
        tenth = done * 10 // total
        if self._shown.get(what, -1) < tenth or (done == total and self._shown.get(what) != 10):
            self._shown[what] = 10 if done == total else tenth
            console.print(f"{what}: {done}/{total}", highlight=False)


async def _index_once(service: CodebaseService, root: Path, embed: bool) -> IndexReport:
    job = await service.job(str(root))  # the CLI drives the steps, with a progress bar
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    plain = None if console.is_terminal else _PlainProgress()
    started = time.perf_counter()
    embed_s: float | None = None
    with Progress(*columns, console=console, transient=True, disable=plain is not None) as bar:
        task = bar.add_task("indexing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if plain is not None:
                plain("indexing files", done, total)

        indexer = Indexer(job.store, root, service.settings)
        report = await asyncio.to_thread(indexer.run, progress=progress)
        job.report, job.state = report, "ready"
        if embed:
            embed_started = time.perf_counter()
            stats = await asyncio.to_thread(job.store.stats, job.repo)
            pending = stats.pending_embeddings
            bar.update(task, description="embedding", completed=0, total=pending)
            embedding = asyncio.create_task(service.embed_pending(job))
            while not embedding.done():
                await asyncio.sleep(0.2)
                stats = await asyncio.to_thread(job.store.stats, job.repo)
                bar.update(task, completed=pending - stats.pending_embeddings)
                if plain is not None:
                    plain("embedding chunks", pending - stats.pending_embeddings, pending)
            await embedding
            if plain is not None:
                plain("embedding chunks", pending, pending)
            embed_s = time.perf_counter() - embed_started
    _print_report(report, time.perf_counter() - started, embed_s)
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
    root = existing_dir(path)

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
    local: Annotated[bool, typer.Option(help="never ask a running server")] = False,
    config: ConfigOption = None,
) -> None:
    """Search an indexed repository (run `mimiverse index` first).

    When `mimiverse serve` runs (at the configured host and port) and has this repository
    indexed, it answers: its embedding model is already loaded. When none answers, or it
    has not indexed the repository, the search runs here, loading the model first. A
    server that refuses (a wrong token, a bad request) or fails is an error (exit 1)."""
    if mode not in ("lexical", "vector", "hybrid"):
        raise fail(f"mode must be lexical, vector or hybrid, not {mode!r}")
    settings = settings_from(config)
    root = path.resolve()
    body = {"query": query, "limit": limit, "mode": mode, "path_glob": path_glob,
            "language": language, "repo": str(root)}

    async def here() -> dict[str, Any]:
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
        return {
            "results": [{
                "path": h.chunk.path, "start_line": h.chunk.start_line,
                "end_line": h.chunk.end_line, "symbol": h.chunk.symbol,
                "language": h.chunk.language, "score": h.score, "signals": h.signals,
                "snippet": h.chunk.text,
            } for h in result.hits],
            "took_ms": result.took_ms, "notes": result.notes,
        }

    async def go() -> tuple[dict[str, Any], str]:
        if not local:
            answer = await _ask_server(settings, body)
            if answer is not None:
                return answer, "the running server"
        return await here(), "this process"

    found, where = run(go())
    if as_json:
        print(orjson.dumps({**found, "answered_by": where},
                           option=orjson.OPT_INDENT_2).decode())
        return
    _print_results(query, found, where)


async def _ask_server(settings: Settings, body: dict[str, Any]) -> dict[str, Any] | None:
    """The running server's answer, or None when no server can be reached (or none answers
    in time) or it has not indexed the repository: then the search runs here. Any other
    answer (a refused token, a bad request, a failure) is this command's error."""
    import aiohttp

    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{host}:{settings.server.port}/api/codebase/search"
    tokens = settings.auth.tokens
    headers = {"Authorization": f"Bearer {tokens[0].get_secret_value()}"} if tokens else {}
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=0.5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            url, json=body, headers=headers
        ) as r:
            status, raw = r.status, await r.read()
    except aiohttp.ClientConnectionError:
        return None  # nothing listens there (or it went away): no server runs
    except TimeoutError:
        err_console.print(f"[yellow]note:[/] {url} did not answer in {timeout.total:g} s; "
                          "searching here", highlight=False, soft_wrap=True)
        return None
    except aiohttp.ClientError as exc:
        raise fail(f"{url} sent a broken answer ({type(exc).__name__})") from None
    answer = _json_object(raw)
    if status == 200:
        if answer is None or not isinstance(answer.get("results"), list):
            raise fail(f"{url} answered 200 without search results: is it a Mimiverse server?")
        return answer
    error = (answer or {}).get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    if status == 404 and kind == "repo_not_indexed":
        return None  # the server does not have it; an index made here may
    if status == 401:
        # Never the token (nor any part of it): which one was sent is enough to fix it.
        sent = ("the first of [auth] tokens in this command's configuration" if tokens
                else "none: this command's configuration has no [auth] tokens")
        raise fail(f"{url} refused the API token (401 unauthorized); token sent: {sent}")
    try:
        said = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        said = str(status)
    if not isinstance(error, dict) or not isinstance(kind, str):
        raise fail(f"{url} answered {said}, not in Mimiverse's error shape: is another "
                   f"program listening on port {settings.server.port}?")
    raise fail(f"{url} answered {said}: {kind}: {str(error.get('message', ''))[:500]}")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _print_results(query: str, found: dict[str, Any], where: str) -> None:
    hits = found["results"]
    wide = console.width >= 120
    table = Table(title=f"{query!r}: {len(hits)} results in {found['took_ms']:.1f} ms "
                        f"({where})")
    # The location and score never wrap or shrink: they are what the reader came for.
    rows = []
    for i, h in enumerate(hits, start=1):
        why = " ".join(f"{s}#{int(v['rank'])}" for s, v in h["signals"].items())
        first = next((ln.strip() for ln in h["snippet"].splitlines() if ln.strip()), "")
        rows.append([str(i), f"{h['path']}:{h['start_line']}-{h['end_line']}",
                     h["symbol"] or "", f"{h['score']:.4f}", why, first[:80]])
    longest = max((len(r[1]) for r in rows), default=5)
    table.add_column("#", no_wrap=True)
    table.add_column("where", no_wrap=True, min_width=min(longest, 60))
    table.add_column("symbol", overflow="fold")
    table.add_column("score", no_wrap=True, min_width=6)
    table.add_column("why", overflow="fold")
    if wide:
        table.add_column("first line", overflow="ellipsis", no_wrap=True, ratio=1)
    for row in rows:
        table.add_row(*(row if wide else row[:5]))
    console.print(table)
    for note in found["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
