"""Small helpers the fault scenarios share: polling with a deadline, reading SSE, state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson


async def until(
    check: Callable[[], Awaitable[bool]], what: str, within_s: float = 3.0
) -> float:
    """Poll `check` until it holds; returns the seconds it took. Fails naming `what`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"{what}: not within {within_s}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """Every `event:` / `data:` block of an SSE body, data parsed as JSON."""
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def breaker_state(http: httpx.AsyncClient, url: str, backend: str) -> str:
    """The completion route's breaker state for `backend`: closed / open / half-open."""
    models = (await http.get(f"{url}/api/models/available")).json()["models"]
    for entry in models["completion"]["backends"]:
        if entry["name"] == backend:
            return str(entry["state"])
    raise AssertionError(f"{backend} is not a completion backend")
