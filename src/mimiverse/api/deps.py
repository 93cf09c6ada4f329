"""Typed dependencies and the client-disconnect guard shared by the routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from mimiverse.gateway import Gateway

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before we answered; the upstream work was cancelled."""


async def get_gateway(request: Request) -> Gateway:
    # async: a plain `def` dependency would cost a thread-pool hop on every request.
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def _wait_for_disconnect(request: Request) -> None:
    # The body is already read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task, cancelling it as soon as the client disconnects.

    Only the watcher is a task of its own: running `work` here spares a task and an
    `asyncio.wait` on every request (the gateway's throughput is per-request CPU)."""
    this = asyncio.current_task()
    assert this is not None
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        await _wait_for_disconnect(request)
        disconnected = True
        this.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise
        this.uncancel()  # our own cancel: it ends here, as ClientDisconnected
        raise ClientDisconnected() from None
    finally:
        watcher.cancel()
