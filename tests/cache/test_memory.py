"""The in-process LRU: bounds by entries and bytes, LRU order, TTL on a fake clock."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest

from mimiverse.cache.base import build_cache
from mimiverse.cache.memory import MemoryCache
from mimiverse.config import CacheSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def size(value: Mapping[str, object]) -> int:
    return len(orjson.dumps(value))


async def test_evicts_the_least_recently_used_when_over_max_entries() -> None:
    cache = MemoryCache(max_entries=3)
    for k in "abc":
        await cache.set(k, {"k": k})
    assert await cache.get("a") == {"k": "a"}  # a is now the most recent; b the coldest
    await cache.set("d", {"k": "d"})
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in "acd"] == [{"k": "a"}, {"k": "c"}, {"k": "d"}]
    assert cache.evictions == 1


async def test_evicts_by_bytes_counting_the_stored_json_exactly() -> None:
    one = {"t": "x" * 92}  # 100 bytes of JSON
    assert size(one) == 100
    cache = MemoryCache(max_entries=100, max_bytes=250)
    await cache.set("a", one)
    await cache.set("b", one)
    assert (await cache.stats()).bytes == 200
    await cache.set("c", one)  # 300 > 250: a goes
    assert await cache.get("a") is None
    assert len(cache) == 2
    assert (await cache.stats()).bytes == 200
    # One larger value can push out several small ones.
    await cache.set("big", {"t": "y" * 192})  # 200 bytes
    assert len(cache) == 1
    assert await cache.get("big") is not None
    assert (await cache.stats()).bytes == 200


async def test_a_value_larger_than_max_bytes_is_not_kept_and_drops_the_old_one() -> None:
    cache = MemoryCache(max_bytes=100)
    await cache.set("k", {"t": "small"})
    await cache.set("k", {"t": "x" * 200})
    assert await cache.get("k") is None
    assert (await cache.stats()).bytes == 0


async def test_replacing_a_key_replaces_its_bytes() -> None:
    cache = MemoryCache()
    await cache.set("k", {"t": "x" * 90})
    await cache.set("k", {"t": "x"})
    stats = await cache.stats()
    assert (stats.keys, stats.bytes) == (1, size({"t": "x"}))


async def test_ttl_is_checked_on_read_with_the_injected_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(default_ttl_s=10, clock=clock)
    await cache.set("default", {"v": 1})
    await cache.set("short", {"v": 2}, ttl_s=1)
    clock.now += 0.999
    assert await cache.get("short") == {"v": 2}
    clock.now += 0.001
    assert await cache.get("short") is None
    assert len(cache) == 1  # the expired entry went when it was read
    clock.now += 9
    assert await cache.get("default") is None
    assert len(cache) == 0
    assert (await cache.stats()).bytes == 0


async def test_expired_entries_at_the_cold_end_go_first_and_are_not_evictions() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_entries=10, clock=clock)
    await cache.set("old1", {"v": 1}, ttl_s=1)
    await cache.set("old2", {"v": 2}, ttl_s=1)
    await cache.set("keep", {"v": 3}, ttl_s=100)
    clock.now += 5
    await cache.set("new", {"v": 4})
    assert len(cache) == 2
    assert cache.evictions == 0
    assert await cache.get("keep") == {"v": 3}


async def test_aclose_empties_it() -> None:
    cache = MemoryCache()
    await cache.set("k", {"v": 1})
    await cache.aclose()
    assert len(cache) == 0


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryCache(max_entries=0)
    with pytest.raises(ValueError):
        MemoryCache(default_ttl_s=0)


async def test_build_cache_makes_the_configured_memory_cache() -> None:
    cache = build_cache(CacheSettings(kind="memory", max_entries=7, max_bytes=4096, ttl_s=12))
    assert isinstance(cache, MemoryCache)
    assert (cache.max_entries, cache.max_bytes, cache.default_ttl_s) == (7, 4096, 12)
    assert cache.health() == ("ok", None)
    await cache.aclose()
