"""The response cache end to end: hits, replayed streams, type-ahead, single-flight, Redis."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.api.conftest import Serve
from tests.api.test_fim import sse_events
from tests.servers.harness import ServerHandle, free_port
from tests.support.app_server import settings_for
from tests.support.redis_server import RedisServer

FIM = {"prefix": "def area(r):\n    return ", "suffix": "\n"}


async def test_identical_deterministic_request_is_served_from_cache(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    first = (await http.post(f"{app.url}/api/ai/fim", json=FIM)).json()
    second = (await http.post(f"{app.url}/api/ai/fim", json=FIM)).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["completion"] == first["completion"]
    assert second["model"] == "test-model"
    assert ollama_server.behaviour.requests["/api/generate"] == 1
    stats = (await http.get(f"{app.url}/api/cache/stats")).json()
    assert (stats["hits"], stats["misses"], stats["hitRate"]) == (1, 1, 50.0)
    assert stats["kind"] == "memory" and stats["keys"] >= 1 and stats["bytes"] > 0


async def test_cached_stream_is_replayed_as_the_same_events(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    ollama_server.behaviour.reply = "3.14159 * r * r"
    live = sse_events((await http.post(f"{app.url}/api/ai/fim/stream", json=FIM)).text)
    again = sse_events((await http.post(f"{app.url}/api/ai/fim/stream", json=FIM)).text)
    assert [e for e in again if e[0] == "delta"] == [e for e in live if e[0] == "delta"]
    assert len([e for e in live if e[0] == "delta"]) > 1
    assert live[-1][1]["cached"] is False and again[-1][1]["cached"] is True
    assert again[-1][1]["completion"] == "3.14159 * r * r"
    # the non-streaming endpoint shares the entry
    assert (await http.post(f"{app.url}/api/ai/fim", json=FIM)).json()["cached"] is True
    assert ollama_server.behaviour.requests["/api/generate"] == 1


async def test_sampling_is_not_cached_unless_seeded(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    hot = {**FIM, "temperature": 0.7}
    for _ in range(2):
        assert (await http.post(f"{app.url}/api/ai/fim", json=hot)).json()["cached"] is False
    seeded = {**hot, "seed": 7}
    await http.post(f"{app.url}/api/ai/fim", json=seeded)
    assert (await http.post(f"{app.url}/api/ai/fim", json=seeded)).json()["cached"] is True
    assert ollama_server.behaviour.requests["/api/generate"] == 3


async def test_errors_and_interrupted_streams_are_never_cached(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    ollama_server.behaviour.mode = "fail"
    assert (await http.post(f"{app.url}/api/ai/fim", json=FIM)).status_code == 503
    ollama_server.behaviour.configure(mode="die", after_tokens=1, reply="abcdefgh")
    events = sse_events((await http.post(f"{app.url}/api/ai/fim/stream", json=FIM)).text)
    assert events[-1][0] == "error"
    ollama_server.behaviour.mode = "ok"
    r = (await http.post(f"{app.url}/api/ai/fim", json=FIM)).json()
    assert (r["cached"], r["completion"]) == (False, "abcdefgh")


async def test_single_flight_shares_one_upstream_call(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    ollama_server.behaviour.delay_s = 0.05  # keep the first call in flight while others arrive
    answers = await asyncio.gather(
        *(http.post(f"{app.url}/api/ai/fim", json=FIM) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["completion"] for a in answers}) == 1
    assert ollama_server.behaviour.requests["/api/generate"] == 1


async def test_typing_ahead_serves_the_rest_of_a_cached_completion(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    ollama_server.behaviour.reply = "math.pi * r ** 2"
    await http.post(f"{app.url}/api/ai/fim", json=FIM)
    typed = {**FIM, "prefix": FIM["prefix"] + "math.pi"}
    r = (await http.post(f"{app.url}/api/ai/fim", json=typed)).json()
    assert (r["completion"], r["cached"], r["backend"]) == (" * r ** 2", True, "cache")
    events = sse_events((await http.post(f"{app.url}/api/ai/fim/stream", json=typed)).text)
    assert events[0] == ("delta", {"text": " * r ** 2"})
    assert ollama_server.behaviour.requests["/api/generate"] == 1
    diverged = {**FIM, "prefix": FIM["prefix"] + "math.e"}
    assert (await http.post(f"{app.url}/api/ai/fim", json=diverged)).json()["cached"] is False


async def test_clear_empties_the_cache(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    await http.post(f"{app.url}/api/ai/fim", json=FIM)
    cleared = (await http.delete(f"{app.url}/api/cache")).json()["cleared"]
    assert cleared >= 1
    assert (await http.get(f"{app.url}/api/cache/stats")).json()["keys"] == 0
    assert (await http.post(f"{app.url}/api/ai/fim", json=FIM)).json()["cached"] is False


async def _wait_ready_status(http: httpx.AsyncClient, url: str, want: str) -> dict[str, object]:
    deadline = time.monotonic() + 3
    while True:
        body: dict[str, object] = (await http.get(f"{url}/health/ready")).json()
        if body["status"] == want or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_redis_cache_survives_redis_dying_and_recovers(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient,
    redis_server: RedisServer,
) -> None:
    settings = settings_for(("ollama", "ollama", ollama_server.url),
                            cache={"kind": "redis", "url": redis_server.url})
    app = serve(settings)
    assert (await http.post(f"{app.url}/api/ai/fim", json=FIM)).json()["cached"] is False
    assert (await http.post(f"{app.url}/api/ai/fim", json=FIM)).json()["cached"] is True
    assert (await http.get(f"{app.url}/api/cache/stats")).json()["kind"] == "redis"

    redis_server.kill()
    for i in range(5):  # requests keep succeeding, uncached
        r = await http.post(f"{app.url}/api/ai/fim", json={**FIM, "prefix": f"x{i} = "})
        assert r.status_code == 200 and r.json()["cached"] is False
    ready = await _wait_ready_status(http, app.url, "degraded")
    assert ready["status"] == "degraded"
    checks = ready["checks"]
    assert isinstance(checks, dict) and checks["cache:redis"]["status"] == "degraded"

    redis_server.restart()
    deadline = time.monotonic() + 3
    while True:  # reconnection is retried about once a second
        await http.post(f"{app.url}/api/ai/fim", json={**FIM, "prefix": "again = "})
        r = (await http.post(f"{app.url}/api/ai/fim", json={**FIM, "prefix": "again = "})).json()
        if r["cached"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert r["cached"] is True
    assert (await _wait_ready_status(http, app.url, "ok"))["status"] == "ok"


async def test_server_starts_while_redis_is_down(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    settings = settings_for(("ollama", "ollama", ollama_server.url),
                            cache={"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"})
    app = serve(settings)
    r = await http.post(f"{app.url}/api/ai/fim", json=FIM)
    assert r.status_code == 200 and r.json()["cached"] is False
    stats = (await http.get(f"{app.url}/api/cache/stats")).json()
    assert stats["status"] == "degraded"


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_chat_is_cached_when_deterministic(
    serve: Serve, openai_server: ServerHandle, http: httpx.AsyncClient,
    redis_server: RedisServer, kind: str,
) -> None:
    app = serve(settings_for(("b", "openai", openai_server.url),
                             cache={"kind": kind, "url": redis_server.url}))
    body = {"messages": [{"role": "user", "content": "hello"}]}
    a = (await http.post(f"{app.url}/api/ai/chat", json=body)).json()
    b = (await http.post(f"{app.url}/api/ai/chat", json=body)).json()
    assert (a["cached"], b["cached"]) == (False, True)
    assert a["message"] == b["message"]
    assert openai_server.behaviour.requests["/v1/chat/completions"] == 1
