"""50 streams opened and dropped by their clients, half before the first token and half
after it: every upstream request is closed within a second, and no answer stays counted
as in flight."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.api.conftest import Serve
from tests.faults.support import until
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for
from tests.telemetry.scrape import scrape

HALF = 25


async def test_dropped_streams_close_every_upstream_and_leave_nothing_in_flight(
    serve: Serve, ollama_server: ServerHandle
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    backend = ollama_server.behaviour
    limits = httpx.Limits(max_connections=2 * HALF + 5)
    async with httpx.AsyncClient(timeout=10, trust_env=False, limits=limits) as http:
        got_first = asyncio.Event()
        first_tokens = 0

        async def stream(n: int) -> None:
            nonlocal first_tokens
            body = {"prefix": f"stream_{n} = "}  # distinct: no cache hit, no shared call
            async with http.stream("POST", f"{app.url}/api/ai/fim/stream", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line == "event: delta":
                        first_tokens += 1
                        if first_tokens == HALF:
                            got_first.set()
            raise AssertionError("a stream ended before its client dropped it")

        # After the first token: one token each, then silence with the connection open.
        backend.configure(mode="stall", after_tokens=1)
        after = [asyncio.create_task(stream(n)) for n in range(HALF)]
        await asyncio.wait_for(got_first.wait(), 5)
        # Before the first token: the backend waits long before sending anything.
        backend.configure(mode="ok", delay_s=30)
        before = [asyncio.create_task(stream(HALF + n)) for n in range(HALF)]
        await backend.wait_until(lambda b: b.requests["/api/generate"] == 2 * HALF, 5)
        assert backend.cancelled == 0

        for task in after + before:
            task.cancel()
        await asyncio.gather(*after, *before, return_exceptions=True)
        dropped_at = time.monotonic()
        await backend.wait_until(lambda b: b.cancelled == 2 * HALF, within_s=1.0)
        assert time.monotonic() - dropped_at <= 1.0
        assert backend.completed == 0

        async def nothing_in_flight() -> bool:
            series = (await scrape(http, app.url)).series("mimiverse_in_flight_requests")
            return bool(series) and all(v == 0 for v in series.values())

        await until(nothing_in_flight, "in-flight gauges back to 0", within_s=1.0)
        series = (await scrape(http, app.url)).series("mimiverse_in_flight_requests")
        assert {dict(labels)["task"] for labels in series} == {"completion", "chat", "embedding"}
