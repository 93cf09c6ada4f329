"""One contract, run against every cache kind: what a caller may rely on whichever is set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import pytest
from redis.asyncio import Redis

from mimiverse.cache.base import Cache
from mimiverse.cache.memory import MemoryCache
from mimiverse.cache.redis import RedisCache
from tests.support.redis_server import RedisServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    cache: Cache
    # Let `seconds` pass as far as TTLs go: a fake clock for memory, real time for Redis.
    advance: Callable[[float], Awaitable[None]]
    # Bytes at a cache key, bypassing the cache's encoding (to plant garbage).
    write_raw: Callable[[str, bytes], Awaitable[None]]
    read_raw: Callable[[str], Awaitable[bytes | None]]


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryCache(default_ttl_s=60, clock=clock)

        async def advance(seconds: float) -> None:
            clock.now += seconds

        async def write_memory(key: str, data: bytes) -> None:
            await memory._set_raw(key, data, 60)

        yield Harness(memory, advance, write_memory, memory._get_raw)
        await memory.aclose()
        return

    server: RedisServer = request.getfixturevalue("redis_server")
    cache = RedisCache(server.url, key_prefix="contract:", default_ttl_s=60)
    raw = Redis.from_url(server.url)

    async def write_redis(key: str, data: bytes) -> None:
        await raw.set(cache.redis_key(key), data)

    async def read_redis(key: str) -> bytes | None:
        data = await raw.get(cache.redis_key(key))
        assert data is None or isinstance(data, bytes)
        return data

    try:
        yield Harness(cache, asyncio.sleep, write_redis, read_redis)
    finally:
        await raw.aclose()
        await cache.aclose()


async def test_set_then_get_returns_an_equal_object(harness: Harness) -> None:
    value = {"text": "return a + b  # ünïcödé ✓", "n": 3, "nested": {"xs": [1, 2.5, None]}}
    await harness.cache.set("k1", value)
    assert await harness.cache.get("k1") == value
    assert await harness.cache.get("absent") is None


async def test_each_get_is_a_fresh_copy(harness: Harness) -> None:
    await harness.cache.set("k", {"xs": [1]})
    first = await harness.cache.get("k")
    assert first is not None
    first["xs"].append(2)
    assert await harness.cache.get("k") == {"xs": [1]}


async def test_set_overwrites(harness: Harness) -> None:
    await harness.cache.set("k", {"v": 1})
    await harness.cache.set("k", {"v": 2})
    assert await harness.cache.get("k") == {"v": 2}


async def test_entries_expire_after_their_ttl(harness: Harness) -> None:
    await harness.cache.set("short", {"v": 1}, ttl_s=0.2)
    await harness.cache.set("long", {"v": 2})  # default TTL (60 s)
    assert await harness.cache.get("short") == {"v": 1}
    await harness.advance(0.3)
    assert await harness.cache.get("short") is None
    assert await harness.cache.get("long") == {"v": 2}


async def test_a_non_positive_ttl_stores_nothing(harness: Harness) -> None:
    await harness.cache.set("k", {"v": 1}, ttl_s=0)
    assert await harness.cache.get("k") is None


async def test_only_objects_can_be_stored(harness: Harness) -> None:
    with pytest.raises(TypeError):
        await harness.cache.set("k", [1, 2])  # type: ignore[arg-type]


async def test_hits_misses_and_stats(harness: Harness) -> None:
    cache = harness.cache
    await cache.set("a", {"text": "x" * 100})
    await cache.set("b", {"text": "y"})
    assert await cache.get("a") is not None
    assert await cache.get("missing") is None
    assert await cache.get("b") is not None
    stats = await cache.stats()
    assert (stats.kind, stats.hits, stats.misses, stats.keys) == (cache.kind, 2, 1, 2)
    assert stats.hit_rate == 66.67
    assert (stats.status, stats.detail) == ("ok", None)
    # Memory counts the JSON bytes exactly; Redis reports its footprint, overhead included.
    json_bytes = len(orjson.dumps({"text": "x" * 100})) + len(orjson.dumps({"text": "y"}))
    if cache.kind == "memory":
        assert stats.bytes == json_bytes
    else:
        assert stats.bytes >= json_bytes
    assert stats.as_dict()["hit_rate"] == 66.67


async def test_uncounted_gets_leave_stats_alone(harness: Harness) -> None:
    await harness.cache.set("a", {"v": 1})
    assert await harness.cache.get("a", count=False) == {"v": 1}
    assert await harness.cache.get("b", count=False) is None
    stats = await harness.cache.stats()
    assert (stats.hits, stats.misses, stats.hit_rate) == (0, 0, 0.0)


async def test_clear_deletes_every_entry_and_says_how_many(harness: Harness) -> None:
    for i in range(3):
        await harness.cache.set(f"k{i}", {"i": i})
    assert await harness.cache.clear() == 3
    for i in range(3):
        assert await harness.cache.get(f"k{i}") is None
    assert (await harness.cache.stats()).keys == 0
    assert await harness.cache.clear() == 0


async def test_delete(harness: Harness) -> None:
    await harness.cache.set("k", {"v": 1})
    await harness.cache.delete("k")
    await harness.cache.delete("never-there")
    assert await harness.cache.get("k") is None


@pytest.mark.parametrize(
    "garbage",
    [b"{not json", b"\xff\xfe", b"", b"[1, 2]", b"42", b'"text"', b"null", b"true"],
    ids=["broken", "not-utf8", "empty", "array", "number", "string", "null", "bool"],
)
async def test_a_value_that_is_not_a_json_object_is_a_miss_and_is_deleted(
    harness: Harness, garbage: bytes
) -> None:
    await harness.write_raw("k", garbage)
    assert await harness.read_raw("k") == garbage
    assert await harness.cache.get("k") is None
    assert await harness.read_raw("k") is None
    stats = await harness.cache.stats()
    assert (stats.hits, stats.misses) == (0, 1)
    # The key works normally again afterwards.
    await harness.cache.set("k", {"v": 1})
    assert await harness.cache.get("k") == {"v": 1}
