"""The Redis cache against a real redis-server: scoping, failing open, recovery, maxmemory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from mimiverse.cache.base import build_cache
from mimiverse.cache.redis import RedisCache
from mimiverse.config import CacheSettings
from tests.servers.harness import free_port
from tests.support.redis_server import RedisServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def count_commands(cache: RedisCache, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the commands the cache sends from now on."""
    sent: list[str] = []
    client = cache._client
    original: Callable[..., Awaitable[Any]] = client.execute_command

    async def spy(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await original(*args, **options)

    monkeypatch.setattr(client, "execute_command", spy)
    return sent


async def test_keys_are_prefixed_and_set_with_a_ttl(redis_server: RedisServer, raw: Redis) -> None:
    cache = RedisCache(redis_server.url, key_prefix="team-a:", default_ttl_s=30)
    try:
        await cache.set("abc", {"v": 1})
        await cache.set("short", {"v": 2}, ttl_s=0.5)
        assert cache.redis_key("abc") == "team-a:cache:abc"
        assert await raw.get("team-a:cache:abc") == b'{"v":1}'
        assert 29_000 < await raw.pttl("team-a:cache:abc") <= 30_000
        assert 0 < await raw.pttl("team-a:cache:short") <= 500
    finally:
        await cache.aclose()


async def test_clear_deletes_only_our_prefix(redis_server: RedisServer, raw: Redis) -> None:
    # Glob characters in the prefix must match literally, not as a pattern.
    ours = RedisCache(redis_server.url, key_prefix="mv*[x]:")
    theirs = RedisCache(redis_server.url, key_prefix="other:")
    try:
        for i in range(1200):  # more than one SCAN page and one delete batch
            await ours.set(f"k{i}", {"i": i})
        await theirs.set("k1", {"theirs": True})
        foreign = ["mv-anything-x:cache:k1", "mvx:cache:k1", "mv*[x]:session:1", "unrelated"]
        for name in foreign:
            await raw.set(name, b"keep me")
        assert await ours.clear() == 1200
        assert await ours.get("k1") is None
        assert await theirs.get("k1") == {"theirs": True}
        for name in foreign:
            assert await raw.get(name) == b"keep me"
        assert await raw.dbsize() == len(foreign) + 1
    finally:
        await ours.aclose()
        await theirs.aclose()


async def test_stats_count_our_keys_and_estimate_bytes(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    other = RedisCache(redis_server.url, key_prefix="other:")
    try:
        for i in range(100):
            await cache.set(f"k{i}", {"text": "x" * 1000})
        await other.set("k", {"text": "y"})
        stats = await cache.stats()
        assert (stats.kind, stats.keys, stats.status) == ("redis", 100, "ok")
        assert 100 * 1000 < stats.bytes < 100 * 2000
    finally:
        await cache.aclose()
        await other.aclose()


async def test_something_else_at_our_key_is_a_miss_and_is_removed(
    redis_server: RedisServer, raw: Redis
) -> None:
    cache = RedisCache(redis_server.url)
    try:
        await raw.rpush(cache.redis_key("k"), "not", "a", "string")
        assert await cache.get("k") is None
        assert await raw.exists(cache.redis_key("k")) == 0
        assert cache.health() == ("ok", None)
    finally:
        await cache.aclose()


async def test_starts_while_redis_is_down_and_recovers_when_it_comes_up(tmp_path: Any) -> None:
    port = free_port()
    cache = build_cache(CacheSettings(kind="redis", url=f"redis://127.0.0.1:{port}/0"))
    try:
        assert isinstance(cache, RedisCache)
        assert cache.health() == ("ok", None)  # constructing it did not connect
        assert await cache.get("k") is None
        await cache.set("k", {"v": 1})
        status, detail = cache.health()
        assert status == "degraded"
        assert detail is not None and "redis unavailable" in detail and str(port) in detail
        stats = await cache.stats()
        assert (stats.status, stats.keys, stats.misses) == ("degraded", 0, 1)
    finally:
        await cache.aclose()


async def test_kill_mid_run_fails_open_then_restart_recovers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RedisCache(redis_server.url)
    try:
        await cache.set("k", {"v": 1})
        assert await cache.get("k") == {"v": 1}

        redis_server.kill()
        sent = count_commands(cache, monkeypatch)
        assert await cache.get("k") is None  # the pooled connection finds Redis gone
        await cache.set("k2", {"v": 2})
        status, detail = cache.health()
        assert status == "degraded" and detail is not None
        # Until the retry time, requests skip Redis entirely instead of failing one by one.
        for _ in range(50):
            assert await cache.get("k") is None
            await cache.set("k", {"v": 1})
        assert sent == ["GET"]
        assert await cache.clear() == 0
        assert (await cache.stats()).status == "degraded"

        redis_server.restart()
        deadline = time.monotonic() + 2.0
        while cache.health()[0] != "ok" or await cache.get("k3") is None:
            assert time.monotonic() < deadline, "the cache did not recover within 2 s"
            await cache.set("k3", {"v": 3})
            await asyncio.sleep(0.05)
        assert cache.health() == ("ok", None)
        assert await cache.get("k") is None  # nothing persisted across the restart
        assert (await cache.stats()).keys == 1
    finally:
        await cache.aclose()


async def test_retries_back_off_to_once_a_second_with_one_probe_at_a_time(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    cache = RedisCache(redis_server.url, clock=clock)
    try:
        redis_server.kill()
        sent = count_commands(cache, monkeypatch)

        async def attempts_after(seconds: float) -> int:
            clock.now += seconds
            before = len(sent)
            await cache.get("k")
            return len(sent) - before

        assert await attempts_after(0) == 1  # fails: down, next try in 0.25 s
        assert await attempts_after(0.24) == 0
        assert await attempts_after(0.01) == 1  # probe fails: next in 0.5 s
        assert await attempts_after(0.49) == 0
        assert await attempts_after(0.01) == 1  # next in 1 s, the ceiling
        assert await attempts_after(0.99) == 0
        assert await attempts_after(0.01) == 1
        assert await attempts_after(0.99) == 0
        assert await attempts_after(0.01) == 1

        redis_server.restart()
        assert await attempts_after(0.99) == 0
        assert await attempts_after(0.01) == 1  # the probe succeeds
        assert cache.health() == ("ok", None)
        assert await attempts_after(0) == 1
    finally:
        await cache.aclose()


async def test_while_a_probe_is_in_flight_other_requests_skip_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    cache = RedisCache(redis_server.url, clock=clock)
    try:
        redis_server.kill()
        await cache.get("k")
        assert cache.health()[0] == "degraded"
        redis_server.restart()
        clock.now += 1
        sent = count_commands(cache, monkeypatch)
        # One probe goes to Redis while the rest, issued at the same moment, skip it.
        results = await asyncio.gather(*(cache.get("k") for _ in range(20)))
        assert results == [None] * 20
        assert sent == ["GET"]
        assert cache.health() == ("ok", None)
        assert (await cache.stats()).misses == 21
    finally:
        await cache.aclose()


async def test_a_hung_redis_costs_one_socket_timeout_then_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A server that accepts connections and never answers, like a wedged Redis.
    conns: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.25)
    try:
        async with asyncio.timeout(5):  # a hang guard: the socket timeout must end it
            assert await cache.get("k") is None
        status, detail = cache.health()
        assert status == "degraded" and detail is not None and "Timeout" in detail
        sent = count_commands(cache, monkeypatch)
        for _ in range(100):
            assert await cache.get("k") is None
        assert sent == []  # skipped until the retry time, not timed out one by one
    finally:
        await cache.aclose()
        for writer in conns:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_allkeys_lru_eviction_by_redis_is_just_misses(
    redis_server: RedisServer, raw: Redis
) -> None:
    await raw.config_set("maxmemory", "2mb")
    await raw.config_set("maxmemory-policy", "allkeys-lru")
    # Evicting takes Redis time: on a loaded machine a 0.25 s read limit would make this
    # a timeout test (fail-open is tested on its own).
    cache = RedisCache(redis_server.url, socket_timeout_s=5)
    try:
        for i in range(1000):  # ~4 MB of values into 2 MB
            await cache.set(f"k{i}", {"text": f"{i:04d}" * 1000})
        assert cache.health() == ("ok", None)
        hits = [await cache.get(f"k{i}") for i in range(1000)]
        kept = [i for i, v in enumerate(hits) if v is not None]
        assert 0 < len(kept) < 1000
        assert all(hits[i] == {"text": f"{i:04d}" * 1000} for i in kept)
        assert any(i >= 990 for i in kept)  # recent writes survive LRU
        stats = await cache.stats()
        assert (stats.status, stats.keys) == ("ok", len(kept))
        assert stats.hits == len(kept) and stats.misses == 1000 - len(kept)
    finally:
        await cache.aclose()


async def test_refused_writes_degrade_status_but_reads_keep_working(
    redis_server: RedisServer, raw: Redis
) -> None:
    cache = RedisCache(redis_server.url)
    try:
        await cache.set("early", {"v": 1})
        await raw.config_set("maxmemory-policy", "noeviction")
        await raw.config_set("maxmemory", "1")  # everything is over the limit now
        await cache.set("late", {"v": 2})  # OOM: dropped, not raised
        status, detail = cache.health()
        assert status == "degraded" and detail is not None and "OutOfMemory" in detail
        assert await cache.get("early") == {"v": 1}  # Redis itself is reachable
        assert await cache.get("late") is None
    finally:
        await cache.aclose()
