"""The cache contract: JSON objects by key, with TTLs, hit/miss counting and a health line.

A kind implements a few raw byte operations (`_get_raw`, `_set_raw`, `_delete`, `_clear`,
`_size`) plus `health` and `aclose`; decoding, validation and counting live here so every
kind behaves the same. Values are JSON objects: anything stored at a key that does not
parse, or parses to something other than an object, is a miss and is deleted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson

if TYPE_CHECKING:
    from mimiverse.config import CacheSettings

Status = Literal["ok", "degraded"]


@dataclass(frozen=True, slots=True)
class CacheStats:
    kind: str
    hits: int
    misses: int
    keys: int
    bytes: int
    hit_rate: float  # percent of lookups that hit, 2 decimals; 0.0 before any lookup
    status: Status
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Cache(ABC):
    kind: ClassVar[str]

    def __init__(self, *, default_ttl_s: float) -> None:
        if default_ttl_s <= 0:
            raise ValueError("default_ttl_s must be positive")
        self.default_ttl_s = default_ttl_s
        self.hits = 0
        self.misses = 0

    async def get(self, key: str, *, count: bool = True) -> dict[str, Any] | None:
        """The object stored at `key`, or None. `count=False` leaves hit/miss stats alone
        (for internal probes such as type-ahead, which would swamp the hit rate)."""
        raw = await self._get_raw(key)
        value: dict[str, Any] | None = None
        if raw is not None:
            try:
                decoded = orjson.loads(raw)
            except orjson.JSONDecodeError:
                decoded = None
            if isinstance(decoded, dict):
                value = decoded
            else:
                # Garbage would miss forever; dropping it lets the next set repair the key.
                await self._delete(key)
        if count:
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return value

    async def set(self, key: str, value: dict[str, Any], ttl_s: float | None = None) -> None:
        """Store `value` for `ttl_s` seconds (default: the configured TTL); <= 0 stores nothing."""
        if not isinstance(value, dict):
            raise TypeError(f"cache values are JSON objects, not {type(value).__name__}")
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if ttl <= 0:
            return
        await self._set_raw(key, orjson.dumps(value), ttl)

    async def delete(self, key: str) -> None:
        await self._delete(key)

    async def clear(self) -> int:
        """Delete this server's entries; returns how many were deleted."""
        return await self._clear()

    async def stats(self) -> CacheStats:
        keys, size = await self._size()
        status, detail = self.health()
        lookups = self.hits + self.misses
        rate = round(100.0 * self.hits / lookups, 2) if lookups else 0.0
        return CacheStats(self.kind, self.hits, self.misses, keys, size, rate, status, detail)

    @abstractmethod
    def health(self) -> tuple[Status, str | None]:
        """("ok", None), or ("degraded", why): cheap, never does I/O."""

    @abstractmethod
    async def aclose(self) -> None: ...

    # -- what a kind implements: raw bytes, no decoding, no counting -----------------

    @abstractmethod
    async def _get_raw(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def _set_raw(self, key: str, data: bytes, ttl_s: float) -> None: ...

    @abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abstractmethod
    async def _clear(self) -> int: ...

    @abstractmethod
    async def _size(self) -> tuple[int, int]:
        """(keys, bytes) held by this server's entries, exact or estimated per kind."""


def build_cache(settings: CacheSettings) -> Cache:
    """The configured cache. Never connects: a Redis that is down degrades, it doesn't fail."""
    if settings.kind == "redis":
        # Imported here so the memory kind works without the redis package loaded.
        from mimiverse.cache.redis import RedisCache

        return RedisCache(
            settings.url, key_prefix=settings.key_prefix, default_ttl_s=settings.ttl_s
        )
    from mimiverse.cache.memory import MemoryCache

    return MemoryCache(
        max_entries=settings.max_entries,
        max_bytes=settings.max_bytes,
        default_ttl_s=settings.ttl_s,
    )
