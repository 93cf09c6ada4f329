"""What each task's model can do: configured (`capabilities` in [models.<task>]), else
asked of the route's backends once and remembered (a failed ask is retried after a while).

The chat path checks a request's needs against it (tools, images, thinking) only when it
is known: an unknown model is not refused here, its backend says what it cannot do.
"""

from __future__ import annotations

import asyncio
import time

from mimiverse.config import Task
from mimiverse.errors import BackendError
from mimiverse.routing.router import Router

RETRY_S = 60.0
# What a request needs -> the capability it takes (ChatRequest.used_fields names).
NEEDS = {"tools": "tools", "images": "vision", "think": "thinking"}


class Capabilities:
    """Per route name: a task, or "vision"."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._found: dict[str, tuple[float, tuple[str, ...] | None]] = {}
        self._asking: dict[str, asyncio.Future[tuple[str, ...] | None]] = {}

    def configured(self, task: str) -> tuple[str, ...] | None:
        route = self.router.named_route(task)
        caps = route.capabilities if route is not None else None
        return None if caps is None else tuple(caps)

    def known(self, task: str) -> tuple[str, ...] | None:
        """What is known now, without asking a backend."""
        configured = self.configured(task)
        if configured is not None:
            return configured
        found = self._found.get(task)
        return found[1] if found is not None else None

    async def of(self, task: str) -> tuple[str, ...] | None:
        """The model's capabilities, or None when neither settings nor backends say;
        concurrent callers share one ask."""
        configured = self.configured(task)
        if configured is not None:
            return configured
        found = self._found.get(task)
        if found is not None and (found[1] is not None
                                  or time.monotonic() - found[0] < RETRY_S):
            return found[1]
        asking = self._asking.get(task)
        if asking is None or asking.done():
            asking = self._asking[task] = asyncio.ensure_future(self._remember(task))
        # shield: a client leaving must not cancel the ask other requests wait on.
        return await asyncio.shield(asking)

    async def _remember(self, task: str) -> tuple[str, ...] | None:
        caps = await self._ask(task)
        self._found[task] = (time.monotonic(), caps)
        return caps

    async def _ask(self, task: str) -> tuple[str, ...] | None:
        route = self.router.named_route(task)
        if route is None:
            return None
        for name in route.backends:
            backend = self.router.backends[name]
            try:
                caps = await asyncio.wait_for(backend.model_capabilities(route.model),
                                              backend.config.timeouts.connect_s + 1.0)
            except (BackendError, TimeoutError):
                continue
            if caps is not None:
                return caps
        return None


async def reported(capabilities: Capabilities, task: Task, *, ask: bool = True) -> list[str]:
    """What clients are told a task's model can do (Continue and llm-ollama turn tools and
    images on from it): the known capabilities (asked of a backend first unless `ask` is
    false); unknown, what the task is for, and tools for chat when a backend of the route
    carries them (the model then says if it cannot)."""
    base = {"completion": ["completion", "insert"], "chat": ["completion"],
            "embedding": ["embedding"]}[task]
    known = await capabilities.of(task) if ask else capabilities.known(task)
    if known is not None:
        return list(dict.fromkeys([*base, *known]))
    carries = any("tools" in b.chat_fields for b in capabilities.router.candidates(task))
    return [*base, "tools"] if task == "chat" and carries else base


def missing(caps: tuple[str, ...] | None, used: list[str]) -> list[str]:
    """The capabilities `used` fields need that `caps` lacks (none when caps is unknown)."""
    if caps is None:
        return []
    return [NEEDS[f] for f in used if f in NEEDS and NEEDS[f] not in caps]
