"""How much one request and one client may take, in one ASGI pass after the security gate.

A request body over `max_body_bytes` gets 413: at once when Content-Length says so, else
as soon as the bytes read pass the limit (the app is told the client left).

A client is an API token (its Principal); with no tokens configured, every caller is the
same client. Each gets:

- a rate limit (token bucket: `requests_per_minute`, bursts of `burst`), off by default;
- a cap on requests in flight (`max_concurrent`) with a bounded FIFO queue in front of it
  (`max_queue`, waiting at most `queue_timeout_s`).

Over any of them the answer is 429 with Retry-After, at once: a flood queues nowhere
unbounded, so the requests let in keep their latency. A slot is held until the response
ends (a stream until its last event), and a stream whose reader takes nothing for
`write_idle_timeout_s` is dropped, so a stalled client cannot hold a slot, or an upstream
generation, for ever. Health and metrics are never limited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mimiverse.config import LimitsSettings
from mimiverse.security import ANONYMOUS, PRINCIPAL_SCOPE_KEY, Principal, refuse

log = logging.getLogger("mimiverse.admission")

UNLIMITED_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
MAX_BODY_BYTES = 8 * 1024 * 1024


class SlowReader(Exception):
    """The client took no bytes of the response for the write-idle timeout."""


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def take(self, now: float) -> float:
        """0 when a token was taken; else the seconds until one will be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(slots=True)
class Client:
    slots: asyncio.Semaphore
    bucket: TokenBucket | None
    waiting: int = 0


class Admission:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, limits: LimitsSettings, write_idle_timeout_s: float,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limits = limits
        self.write_idle_timeout_s = write_idle_timeout_s
        self.max_body_bytes = max_body_bytes
        # One entry per configured token (plus the anonymous caller): bounded by settings.
        self.clients: dict[str, Client] = {}

    def _client(self, principal: Principal) -> Client:
        client = self.clients.get(principal.token_id)
        if client is None:
            rpm = self.limits.requests_per_minute
            bucket = None
            if rpm:
                burst = self.limits.burst or max(1, rpm // 10)
                bucket = TokenBucket(rate=rpm / 60, capacity=burst)
            client = Client(asyncio.Semaphore(self.limits.max_concurrent), bucket)
            self.clients[principal.token_id] = client
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await self._too_large(send)
                return
        receive, send = self._bounded(receive, send)
        if scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        principal: Principal = scope.get(PRINCIPAL_SCOPE_KEY, ANONYMOUS)
        client = self._client(principal)
        if client.bucket is not None:
            wait = client.bucket.take(time.monotonic())
            if wait:
                await _too_many(send, "rate_limited", wait,
                                f"over {self.limits.requests_per_minute} requests a minute "
                                "for this token; retry after the Retry-After seconds")
                return
        if not await self._slot(client, send):
            return
        try:
            await self.app(scope, receive, send)
        except SlowReader:
            # The response was under way; returning lets uvicorn close the connection.
            log.warning("dropped a stream whose client read nothing for %.0f s",
                        self.write_idle_timeout_s)
        finally:
            client.slots.release()

    async def _slot(self, client: Client, send: Send) -> bool:
        """Take a slot, queueing if there is room; answer 429 and False if not."""
        if not client.slots.locked():
            await client.slots.acquire()  # free: returns without waiting
            return True
        if client.waiting >= self.limits.max_queue:
            await _too_many(send, "too_many_requests", 1.0,
                            f"{self.limits.max_concurrent} requests of this token are in "
                            f"flight and {self.limits.max_queue} waiting; retry shortly")
            return False
        client.waiting += 1
        try:
            async with asyncio.timeout(self.limits.queue_timeout_s):
                await client.slots.acquire()
            return True
        except TimeoutError:
            await _too_many(send, "too_many_requests", 1.0,
                            f"waited {self.limits.queue_timeout_s:g} s for one of "
                            f"{self.limits.max_concurrent} request slots; retry shortly")
            return False
        finally:
            client.waiting -= 1

    def _bounded(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """`receive` that stops at the body limit; `send` that gives up on a stalled reader."""
        seen = 0
        refused = streaming = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes and not refused:
                    # Answer 413 now and tell the app the client left, so it stops reading.
                    refused = True
                    await self._too_large(send)
                    return {"type": "http.disconnect"}
            return message

        async def bounded_send(message: Message) -> None:
            nonlocal streaming
            if refused:  # after a 413 the app's own answer has nowhere to go
                return
            if not streaming:
                # uvicorn waits only before a write once its buffers are full, so a
                # response's start and first body part never wait: only a stream's rest can.
                streaming = message.get("more_body", False)
                await send(message)
                return
            try:
                async with asyncio.timeout(self.write_idle_timeout_s):
                    await send(message)
            except TimeoutError:
                raise SlowReader from None

        return counting_receive, bounded_send

    async def _too_large(self, send: Send) -> None:
        await refuse(send, 413, "payload_too_large",
                     f"request body is larger than {self.max_body_bytes} bytes")


async def _too_many(send: Send, kind: str, retry_after_s: float, message: str) -> None:
    seconds = str(max(1, math.ceil(retry_after_s))).encode()
    await refuse(send, 429, kind, message, [(b"retry-after", seconds)])
