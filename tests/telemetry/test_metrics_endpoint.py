"""GET /metrics after scripted traffic: exact counters, bounded labels, in-flight to 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
import redis

from tests.api.conftest import Serve
from tests.servers.behaviour import chat_prompt, split_tokens
from tests.servers.harness import ServerHandle, run_in_thread
from tests.servers.ollama_server import OllamaApp
from tests.support.app_server import settings_for
from tests.support.redis_server import RedisServer
from tests.telemetry.scrape import Samples, labels, scrape

REPLY = "x = 1"  # 3 tokens for the test servers' tokenizer
HI = [{"role": "user", "content": "hi"}]
AGAIN = [{"role": "user", "content": "again"}]


def prompt_tokens(server: ServerHandle, path: str) -> int:
    """Tokens of the prompt the test server last received on `path`."""
    body = server.behaviour.last_request[path]
    prompt = body["prompt"] if "prompt" in body else chat_prompt(body["messages"])
    return len(split_tokens(prompt))


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait for a condition the server reaches on its own (a disconnect it must notice)."""
    deadline = time.monotonic() + 10
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_scripted_traffic_gives_exact_counters(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    primary = ollama_server
    with run_in_thread(OllamaApp()) as secondary:
        primary.behaviour.reply = secondary.behaviour.reply = REPLY
        app = serve(settings_for(("primary", "ollama", primary.url),
                                 ("secondary", "ollama", secondary.url),
                                 breaker={"failures": 1, "cooldown_s": 3600}))
        fim = {"prefix": "def f(", "suffix": ""}
        for _ in range(2):  # a miss, then the same request from the cache
            assert (await http.post(f"{app.url}/api/ai/fim", json=fim)).status_code == 200
        fim_in = prompt_tokens(primary, "/api/generate")
        r = await http.post(f"{app.url}/api/ai/chat", json={"messages": HI, "stream": True})
        assert r.status_code == 200 and "event: done" in r.text
        chat_in = prompt_tokens(primary, "/api/chat")
        r = await http.post(f"{app.url}/api/ai/embed", json={"input": ["a", "b"]})
        assert r.status_code == 200
        primary.behaviour.mode = "fail"  # next: primary fails, its breaker opens (1 failure)
        r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "def g(", "suffix": ""})
        assert r.json()["backend"] == "secondary"
        fallback_in = prompt_tokens(secondary, "/api/generate")
        r = await http.post(f"{app.url}/api/ai/chat", json={"messages": AGAIN})
        assert r.json()["backend"] == "secondary"  # primary skipped: cooling down
        again_in = prompt_tokens(secondary, "/api/chat")
        assert (await http.post(f"{app.url}/api/ai/chat", json={"messages": []})).status_code \
            == 422
        stats = (await http.get(f"{app.url}/api/cache/stats")).json()

        m = await scrape(http, app.url)

    assert m.series("mimiverse_http_requests_total") == {
        labels(route="/api/ai/fim", method="POST", status="2xx"): 3,
        labels(route="/api/ai/chat", method="POST", status="2xx"): 2,
        labels(route="/api/ai/chat", method="POST", status="4xx"): 1,
        labels(route="/api/ai/embed", method="POST", status="2xx"): 1,
        labels(route="/api/cache/stats", method="GET", status="2xx"): 1,
    }
    assert m.series("mimiverse_http_request_duration_seconds_count") == {
        labels(route="/api/ai/fim"): 3, labels(route="/api/ai/chat"): 3,
        labels(route="/api/ai/embed"): 1, labels(route="/api/cache/stats"): 1,
    }
    ok = {"status": "ok"}
    assert m.series("mimiverse_requests_total") == {
        labels(task="completion", model="test-model", backend="primary", **ok): 1,
        labels(task="completion", model="test-model", backend="cache", **ok): 1,
        labels(task="completion", model="test-model", backend="secondary", **ok): 1,
        labels(task="chat", model="test-model", backend="primary", **ok): 1,
        labels(task="chat", model="test-model", backend="secondary", **ok): 1,
        labels(task="embedding", model="test-embed", backend="primary", **ok): 1,
    }
    answered = {
        labels(task="completion", model="test-model", backend="primary"): 1,
        labels(task="completion", model="test-model", backend="cache"): 1,
        labels(task="completion", model="test-model", backend="secondary"): 1,
        labels(task="chat", model="test-model", backend="primary"): 1,
        labels(task="chat", model="test-model", backend="secondary"): 1,
    }
    assert m.series("mimiverse_time_to_first_token_seconds_count") == answered
    assert m.series("mimiverse_request_duration_seconds_count") == {
        **answered, labels(task="embedding", model="test-embed", backend="primary"): 1,
    }
    reply_tokens = len(split_tokens(REPLY))
    assert m.series("mimiverse_tokens_total") == {  # the cache answer did no model work
        labels(task="completion", model="test-model", direction="in"): fim_in + fallback_in,
        labels(task="completion", model="test-model", direction="out"): 2 * reply_tokens,
        labels(task="chat", model="test-model", direction="in"): chat_in + again_in,
        labels(task="chat", model="test-model", direction="out"): 2 * reply_tokens,
    }
    assert m.series("mimiverse_in_flight_requests") == {
        labels(task="completion"): 0, labels(task="chat"): 0, labels(task="embedding"): 0,
    }
    assert m.series("mimiverse_fallbacks_total") == {
        labels(task="completion", backend="primary"): 1,  # it failed
        labels(task="chat", backend="primary"): 1,  # its breaker was open
    }
    assert m.series("mimiverse_backend_cooldowns_total") == {
        labels(backend="primary"): 1, labels(backend="secondary"): 0,
    }
    assert m.series("mimiverse_backend_up") == {
        labels(backend="primary", kind="ollama"): 0, labels(backend="secondary", kind="ollama"): 1,
    }
    assert m.series("mimiverse_embedding_batch_seconds_count") == {labels(backend="primary"): 1}
    # Lookups: FIM miss, FIM hit, chat, 2 embedding texts, the second FIM, the second chat.
    assert m.series("mimiverse_cache_requests_total") == {
        labels(result="hit"): 1, labels(result="miss"): 6,
    }
    assert (stats["hits"], stats["misses"]) == (1, 6)
    assert m.get_value("mimiverse_cache_entries") == stats["keys"] > 0
    assert m.get_value("mimiverse_cache_bytes") == stats["bytes"] > 0
    assert [m.get_value(f"mimiverse_index_{n}") for n in ("files", "chunks",
                                                          "pending_embeddings")] == [0, 0, 0]
    assert m.get_value("mimiverse_gpus") == 0  # this machine has no GPU


async def test_requests_cannot_create_label_values(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    settings = settings_for(("b", "ollama", ollama_server.url))
    app = serve(settings)

    await http.get(f"{app.url}/made/up/path-123")
    await http.post(f"{app.url}/api/ai/fim/made-up")
    await http.request("PROPFIND", f"{app.url}/api/ai/fim")
    await http.get(f"{app.url}/v1/models/made-up-model")
    await http.post(f"{app.url}/v1/chat/completions",
                    json={"model": "made-up-model", "messages": HI})
    await http.post(f"{app.url}/v1/embeddings", json={"model": "made-up-model", "input": "a"})
    await http.post(f"{app.url}/api/generate", json={"model": "made-up-model", "prompt": "a"})
    after = await scrape(http, app.url)

    # Every value comes from the app's routes, the configuration or a fixed set.
    everything = set().union(*(after.label_values(k) for k in (
        "route", "method", "model", "backend", "task", "status")))
    assert not [v for v in everything if "made" in v.lower()]
    assert after.series("mimiverse_http_requests_total") == {
        labels(route="other", method="GET", status="4xx"): 1,  # 404
        labels(route="other", method="POST", status="4xx"): 1,  # 404
        labels(route="/api/ai/fim", method="other", status="4xx"): 1,  # 405
        labels(route="/v1/models/{name:path}", method="GET", status="4xx"): 1,
        labels(route="/v1/chat/completions", method="POST", status="4xx"): 1,
        labels(route="/v1/embeddings", method="POST", status="4xx"): 1,
        labels(route="/api/generate", method="POST", status="4xx"): 1,
    }
    assert after.label_values("model") <= {"test-model", "test-embed"}
    assert after.label_values("backend") <= {"b", "cache", "none"}


async def test_in_flight_returns_to_zero_when_a_stream_is_cut_short(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    ollama_server.behaviour.reply = " ".join(f"w{i}" for i in range(40))
    ollama_server.behaviour.delay_s = 0.05  # 2 s in all: the client leaves long before
    app = serve(settings_for(("b", "ollama", ollama_server.url)))
    body = {"messages": HI, "stream": True}
    async with http.stream("POST", f"{app.url}/api/ai/chat", json=body) as r:
        lines = r.aiter_lines()  # held: a dropped iterator would close the response now
        async for line in lines:
            if line == "event: delta":
                break
        during = await scrape(http, app.url)
    # Leaving the block closed the connection mid-stream: the server must notice.
    assert during.get_value("mimiverse_in_flight_requests", task="chat") == 1
    m = Samples()

    async def settled() -> bool:
        nonlocal m
        m = await scrape(http, app.url)
        return m.get_value("mimiverse_in_flight_requests", task="chat") == 0

    await until_async(settled, "the cut stream to end")
    assert m.series("mimiverse_requests_total") == {
        labels(task="chat", model="test-model", backend="b", status="cancelled"): 1,
    }
    assert m.series("mimiverse_time_to_first_token_seconds_count") == {
        labels(task="chat", model="test-model", backend="b"): 1,
    }
    assert m.series("mimiverse_request_duration_seconds_count") == {}  # only completed ones
    await until(lambda: ollama_server.behaviour.cancelled == 1, "the upstream cancel")


async def test_in_flight_returns_to_zero_when_the_client_leaves_before_the_first_token(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    ollama_server.behaviour.mode = "hang"
    app = serve(settings_for(("b", "ollama", ollama_server.url)))
    request = asyncio.ensure_future(
        http.post(f"{app.url}/api/ai/fim", json={"prefix": "def f(", "temperature": 0.5}))
    await until(lambda: ollama_server.behaviour.requests["/api/generate"] == 1,
                "the request upstream")
    waiting = await scrape(http, app.url)
    assert waiting.get_value("mimiverse_in_flight_requests", task="completion") == 1
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    m = Samples()

    async def settled() -> bool:
        nonlocal m
        m = await scrape(http, app.url)
        return m.get_value("mimiverse_in_flight_requests", task="completion") == 0

    await until_async(settled, "the abandoned request to end")
    assert m.series("mimiverse_requests_total") == {
        labels(task="completion", model="test-model", backend="none", status="cancelled"): 1,
    }


@pytest.mark.parametrize(("mode", "backend"), [("fail", "none"), ("die", "b")])
async def test_failures_count_as_errors(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient, mode: str,
    backend: str,
) -> None:
    """All backends failing before a token: no backend answered; dying mid-stream: the
    one that was streaming."""
    ollama_server.behaviour.mode = mode  # type: ignore[assignment]
    ollama_server.behaviour.reply = REPLY + " and more"
    app = serve(settings_for(("b", "ollama", ollama_server.url)))
    r = await http.post(f"{app.url}/api/ai/chat", json={"messages": HI, "stream": True})
    assert r.status_code == (503 if mode == "fail" else 200)
    m = await scrape(http, app.url)
    assert m.series("mimiverse_requests_total") == {
        labels(task="chat", model="test-model", backend=backend, status="error"): 1,
    }
    assert m.get_value("mimiverse_in_flight_requests", task="chat") == 0
    status = "5xx" if mode == "fail" else "2xx"  # mid-stream: the status line was sent
    assert m.get_value("mimiverse_http_requests_total", route="/api/ai/chat", method="POST",
                       status=status) == 1


async def until_async(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 10
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_redis_cache_counts_lookups_but_not_its_size(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient,
    redis_server: RedisServer,
) -> None:
    """Sizing Redis would SCAN the shared keyspace at every scrape of every replica."""
    app = serve(settings_for(("b", "ollama", ollama_server.url),
                             cache={"kind": "redis", "url": redis_server.url}))
    for _ in range(2):
        await http.post(f"{app.url}/api/ai/fim", json={"prefix": "def f("})
    m = await scrape(http, app.url)
    assert m.series("mimiverse_cache_requests_total") == {
        labels(result="hit"): 1, labels(result="miss"): 1,
    }
    assert m.get_value("mimiverse_cache_entries") is None
    assert m.get_value("mimiverse_cache_bytes") is None
    with redis.Redis.from_url(redis_server.url) as client:
        assert "cmdstat_scan" not in client.info("commandstats")
