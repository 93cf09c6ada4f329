"""`mimiverse complete` and `mimiverse chat`: one request from the command line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from mimiverse.backends.base import ChatMessage
from mimiverse.cli.common import ConfigOption, console, fail, run, settings_from
from mimiverse.gateway import ChatInput, FimInput, Gateway

_POSITION = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<col>\d+)$")


def split_at_position(spec: str) -> tuple[str, str, str]:
    """FILE:LINE:COL (1-based) -> (prefix, suffix, path)."""
    match = _POSITION.match(spec)
    if not match:
        raise fail(f"position {spec!r} is not FILE:LINE:COL (1-based line and column)")
    path = Path(match["path"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None
    lines = text.splitlines(keepends=True) or [""]
    line, col = int(match["line"]), int(match["col"])
    if not 1 <= line <= len(lines):
        raise fail(f"{path} has {len(lines)} lines; line {line} is outside it")
    width = len(lines[line - 1].rstrip("\r\n"))
    if not 1 <= col <= width + 1:
        raise fail(f"line {line} of {path} has {width} characters; column {col} is outside it")
    offset = sum(len(x) for x in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:], str(path)


def complete(
    position: Annotated[str | None, typer.Argument(help="FILE:LINE:COL of the cursor")] = None,
    prefix: Annotated[str | None, typer.Option(help="text before the cursor")] = None,
    suffix: Annotated[str, typer.Option(help="text after the cursor")] = "",
    max_tokens: Annotated[int | None, typer.Option(min=1, max=8192)] = None,
    config: ConfigOption = None,
) -> None:
    """Fill in the middle at a cursor, given as FILE:LINE:COL or --prefix/--suffix."""
    if (position is None) == (prefix is None):
        raise fail("give either FILE:LINE:COL or --prefix (with optional --suffix)")
    path = None
    if position is not None:
        prefix, suffix, path = split_at_position(position)
    assert prefix is not None
    fim = FimInput(prefix=prefix, suffix=suffix, path=path, max_tokens=max_tokens)

    async def go() -> None:
        gateway = Gateway(settings_from(config))
        try:
            answer = await gateway.complete(fim)
        finally:
            await gateway.aclose()
        sys.stdout.write(answer.text + "\n")
        console.print(f"[dim]{answer.model} via {answer.backend}, {answer.latency_ms:.0f} ms[/]",
                      highlight=False)

    run(go())


def chat(
    message: Annotated[str, typer.Argument(help="what to ask")],
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, max=8192)] = None,
    config: ConfigOption = None,
) -> None:
    """Ask the chat model one question; the answer streams to stdout."""
    messages = ((ChatMessage("system", system),) if system else ()) + (
        ChatMessage("user", message),
    )

    async def go() -> None:
        gateway = Gateway(settings_from(config))
        try:
            events = await gateway.stream_chat(ChatInput(messages=messages, max_tokens=max_tokens))
            async for event in events:
                if event.kind == "delta":
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
            sys.stdout.write("\n")
        finally:
            await gateway.aclose()

    run(go())
