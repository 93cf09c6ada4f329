"""In-process LRU cache bounded by entry count and by bytes, with per-entry TTLs.

Values are kept as their JSON bytes: the byte bound is exact (it counts the stored value
bytes, not keys or bookkeeping), and every `get` decodes a fresh object, so callers can
never mutate what another request will read. Every operation is O(1): an OrderedDict in
recency order, TTLs checked when an entry is read or reaches the cold end.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from mimiverse.cache.base import Cache, Status


class MemoryCache(Cache):
    kind = "memory"

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        default_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(default_ttl_s=default_ttl_s)
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        # key -> (JSON bytes, monotonic expiry); first = least recently used.
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def health(self) -> tuple[Status, str | None]:
        return "ok", None

    async def aclose(self) -> None:
        self._entries.clear()
        self._bytes = 0

    async def _get_raw(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        data, expires_at = entry
        if expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return data

    async def _set_raw(self, key: str, data: bytes, ttl_s: float) -> None:
        # Whatever was there is superseded even if the new value can't be kept.
        self._drop(key)
        if len(data) > self.max_bytes:
            return
        self._entries[key] = (data, self._clock() + ttl_s)
        self._bytes += len(data)
        self._evict()

    async def _delete(self, key: str) -> None:
        self._drop(key)

    async def _clear(self) -> int:
        # Everything in this process is this server's.
        count = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        return count

    async def _size(self) -> tuple[int, int]:
        return len(self._entries), self._bytes

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])

    def _evict(self) -> None:
        now = self._clock()
        # Expired entries at the cold end go first and for free; then plain LRU eviction.
        while self._entries:
            key, (data, expires_at) = next(iter(self._entries.items()))
            over = len(self._entries) > self.max_entries or self._bytes > self.max_bytes
            if not over and expires_at > now:
                return
            del self._entries[key]
            self._bytes -= len(data)
            if expires_at > now:
                self.evictions += 1
