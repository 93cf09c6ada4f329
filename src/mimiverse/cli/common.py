"""What every command shares: the --config option and one-line errors."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mimiverse.config import Settings, load_settings
from mimiverse.errors import MimiverseError

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (else $MIMIVERSE_CONFIG)",
                 dir_okay=False),
]


def fail(message: str) -> typer.Exit:
    # Escaped: a message naming a config section ("[auth]") is text, not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                      soft_wrap=True)
    return typer.Exit(code=1)


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except MimiverseError as exc:
        raise fail(str(exc)) from None


def existing_dir(path: Path) -> Path:
    """The resolved folder a command was pointed at; anything else is a one-line error."""
    resolved = path.resolve()
    if not resolved.is_dir():
        raise fail(f"{path} is not a directory")
    return resolved


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; our errors become one clear line and exit code 1."""
    try:
        return asyncio.run(coro)
    except MimiverseError as exc:
        raise fail(str(exc)) from None
