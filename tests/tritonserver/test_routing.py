"""Triton first, the next embedding backend while it is down, Triton again once it is back:
the readiness probe steers routing without waiting for a request to fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from mimiverse.backends.base import Backend
from mimiverse.backends.triton import TritonBackend
from mimiverse.config import load_settings
from mimiverse.routing.router import Router
from tests.support.embedder import BowEmbedder
from tests.tritonserver.bow import bow_vector
from tests.tritonserver.server import TritonServer

DEADLINE_S = 30.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (cheap, in-memory) until true; fail after DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def router(own_triton_server: TritonServer) -> AsyncIterator[Router]:
    settings = load_settings(
        None,
        backends=[
            {"name": "triton", "kind": "triton", "url": own_triton_server.http_url,
             "health_interval_s": 0.2, "timeouts": {"connect_s": 1.0}},
            {"name": "fallback", "kind": "openai", "url": "http://127.0.0.1:9"},
        ],
        models={"embedding": {"model": "bow", "backends": ["triton", "fallback"]},
                "completion": {"model": "m", "backends": ["fallback"]},
                "chat": {"model": "m", "backends": ["fallback"]}},
    )
    backends: dict[str, Backend] = {
        "triton": TritonBackend(settings.backends[0]),
        "fallback": BowEmbedder("fallback"),
    }
    r = Router(settings, backends)
    r.start_probes()
    try:
        yield r
    finally:
        await r.aclose()


async def test_falls_back_while_triton_is_down_and_returns_when_it_is_back(
    router: Router, own_triton_server: TritonServer
) -> None:
    health = router.health
    assert health.names == ["triton"]  # only backends with a probe get a loop
    await until(lambda: (r := health.result("triton")) is not None and r.healthy,
                "the first probe")
    vectors, backend, _ = await router.embed(["def f(): pass"])
    assert backend.name == "triton" and vectors == [bow_vector("def f(): pass").tolist()]

    # Stop Triton while requests keep coming: none of them fails.
    stopping = asyncio.create_task(asyncio.to_thread(own_triton_server.stop))
    answered_by: list[str] = []
    while not stopping.done() or health.allows("triton"):
        _, backend, _ = await router.embed(["class A: pass"])
        answered_by.append(backend.name)
        await asyncio.sleep(0.01)
    await stopping
    assert answered_by[-1] == "fallback"
    assert not health.allows("triton")
    assert router.status()["triton"].healthy is False

    # Skipped without being tried: the fallback answers and Triton's breaker learns nothing.
    failures = router.breakers["triton"].consecutive_failures
    _, backend, _ = await router.embed(["x"])
    assert backend.name == "fallback"
    assert router.breakers["triton"].consecutive_failures == failures

    # Back up: the probe flips routing back (and closes the breaker) without a request.
    await asyncio.to_thread(own_triton_server.start)
    await until(lambda: health.allows("triton"), "the probe to see Triton ready again")
    assert router.breakers["triton"].state == "closed"
    vectors, backend, _ = await router.embed(["def f(): pass"])
    assert backend.name == "triton" and vectors == [bow_vector("def f(): pass").tolist()]
