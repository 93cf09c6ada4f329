"""`mimiverse serve`: the HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mimiverse.app import create_app
from mimiverse.cli.common import ConfigOption, err_console, fail, settings_from
from mimiverse.errors import MimiverseError
from mimiverse.server import Server, uvicorn_config


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="bind address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port [default: 5000]", min=0, max=65535)] = None,
    repo: Annotated[
        list[Path] | None, typer.Option(help="index this repository on start (repeatable)")
    ] = None,
) -> None:
    """Serve completions, chat and embeddings over HTTP."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    settings = settings_from(config)
    if server:
        settings = settings_from(config, server=settings.server.model_copy(update=server))
    try:
        app = create_app(settings, repos=[str(p.resolve()) for p in repo or []])
    except MimiverseError as exc:
        raise fail(str(exc)) from None
    where = f"http://{settings.server.host}:{settings.server.port}"
    if settings.server.port:
        err_console.print(f"Mimiverse: {where} (a page to ask and search; interactive API "
                          f"docs: {where}/docs)",
                          highlight=False, soft_wrap=True)
    Server(uvicorn_config(app, settings)).run()
