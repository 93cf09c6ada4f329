"""`mimiverse serve`: the HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mimiverse.app import create_app
from mimiverse.cli.common import ConfigOption, err_console, fail, settings_from
from mimiverse.config import Settings
from mimiverse.errors import MimiverseError
from mimiverse.server import Server, uvicorn_config
from mimiverse.workers import WorkerFailed, serve_workers


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="bind address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port [default: 5000]", min=0, max=65535)] = None,
    repo: Annotated[
        list[Path] | None, typer.Option(help="index this repository on start (repeatable)")
    ] = None,
    workers: Annotated[int | None, typer.Option(
        help="processes serving the port [default: 1]", min=1, max=64)] = None,
) -> None:
    """Serve completions, chat and embeddings over HTTP."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    if workers is not None:
        server["workers"] = workers
    settings = settings_from(config)
    if server:
        settings = settings_from(config, server=settings.server.model_copy(update=server))
    repos = [str(p.resolve()) for p in repo or []]
    if settings.server.workers > 1:
        _say_where(settings)
        # Each worker builds its own app after the fork (see mimiverse/workers.py); the
        # first one indexes the --repo repositories (the others open them for search) and
        # says the start-up report: once per server, not once per worker.
        try:
            serve_workers(settings, lambda number: create_app(
                settings, repos=repos, first_worker=number == 0), settings.server.workers)
        except (WorkerFailed, OSError) as exc:
            raise fail(str(exc)) from None
        return
    try:
        app = create_app(settings, repos=repos)
    except MimiverseError as exc:
        raise fail(str(exc)) from None
    _say_where(settings)
    Server(uvicorn_config(app, settings)).run()


def _say_where(settings: Settings) -> None:
    """One line, from the process the operator started (before any worker exists)."""
    if not settings.server.port:
        return  # the system picks the port; uvicorn says which
    where = f"http://{settings.server.host}:{settings.server.port}"
    workers = settings.server.workers
    with_workers = f", {workers} workers" if workers > 1 else ""
    err_console.print(f"Mimiverse: {where} (a page to ask and search; interactive API "
                      f"docs: {where}/docs{with_workers})", highlight=False, soft_wrap=True)
