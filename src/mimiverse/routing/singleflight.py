"""Single-flight: identical requests in flight at the same time share one upstream call.

The first caller of a key starts the call as a task; later callers of that key wait on the
same task. Every waiter gets the result or the exception. A waiter that is cancelled (the
editor moved on) leaves without cancelling the call for the others; when the last waiter
leaves, nobody wants the answer, so the call is cancelled. The key is free again as soon
as the call ends or is abandoned, so a later request starts a fresh call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("task", "waiters")

    def __init__(self) -> None:
        self.task: asyncio.Future[T] | None = None
        self.waiters = 0


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[str, _Call[T]] = {}

    def __len__(self) -> int:
        """Calls in flight."""
        return len(self._calls)

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    async def do(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        """`await factory()`, shared with every concurrent caller of the same `key`."""
        call = self._calls.get(key)
        if call is None:
            call = _Call[T]()
            self._calls[key] = call
            # The call runs in the first caller's context (contextvars), as its own task.
            call.task = asyncio.ensure_future(self._run(key, call, factory))
        task = call.task
        assert task is not None
        call.waiters += 1
        try:
            # shield: cancelling this waiter must not cancel the call the others wait on.
            return await asyncio.shield(task)
        finally:
            call.waiters -= 1
            if call.waiters == 0 and not task.done():
                # The last waiter left: forget the key now so a new caller can't join a
                # call that is being cancelled, then cancel it.
                self._forget(key, call)
                task.cancel()

    async def _run(self, key: str, call: _Call[T], factory: Callable[[], Awaitable[T]]) -> T:
        try:
            return await factory()
        finally:
            # Removed inside the task, so no caller can join a call that has finished.
            self._forget(key, call)

    def _forget(self, key: str, call: _Call[T]) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]
