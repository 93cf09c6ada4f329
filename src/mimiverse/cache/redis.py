"""Redis cache shared by replicas; fails open so a dead Redis never fails or stalls a request.

- Keys are `<key_prefix>cache:<key>`: the `cache:` scope keeps `clear()` (SCAN MATCH + UNLINK,
  never KEYS/FLUSHDB) to this deployment's cache entries in a Redis shared with others.
- Values are JSON bytes written with SET PX; Redis expires them, and under
  `maxmemory-policy allkeys-lru` may evict them at any time: nothing assumes a key persists.
- Constructing the client does not connect, so the server starts while Redis is down.
- Any connection error or timeout (sockets time out after ~0.25 s) turns the cache
  "degraded": gets miss, sets are dropped, and Redis is not contacted again until the next
  retry time (0.25 s, then doubling to at most 1 s). One request at a time probes;
  its success turns the cache "ok" again.
- `stats()` counts our keys with SCAN (O(keys in the db), meant for a scrape every few
  seconds, not the request path) and estimates bytes as the mean `MEMORY USAGE` of up to
  64 sampled keys times that count: Redis's own footprint, overhead included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mimiverse.cache.base import Cache, Status

log = logging.getLogger(__name__)

R = TypeVar("R")

_SCAN_COUNT = 1000
_DELETE_BATCH = 500
_SIZE_SAMPLES = 64
# A command error (e.g. OOM under maxmemory-policy noeviction) keeps status "degraded"
# this long, so a cache that silently drops every write shows up on the health page.
_ERROR_WINDOW_S = 10.0
# Connection-level failures: Redis is unreachable or too slow, so back off.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisCache(Cache):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "mimiverse:",
        default_ttl_s: float = 3600.0,
        socket_timeout_s: float = 0.25,
        max_connections: int = 64,
        retry_min_s: float = 0.25,
        retry_max_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(default_ttl_s=default_ttl_s)
        self.prefix = f"{key_prefix}cache:"
        self._match = _glob_escape(self.prefix) + "*"
        # from_url only builds a pool; the first command connects. No client-side retries:
        # a failed command fails fast and the down/retry state below decides what's next.
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 0),
        )
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._down: str | None = None  # why Redis is unreachable; None while it is fine
        self._backoff_s = retry_min_s
        self._retry_at = 0.0
        self._probing = False
        self._error: str | None = None
        self._error_at = 0.0

    def redis_key(self, key: str) -> str:
        return self.prefix + key

    def health(self) -> tuple[Status, str | None]:
        if self._down is not None:
            return "degraded", self._down
        if self._error is not None and self._clock() - self._error_at < _ERROR_WINDOW_S:
            return "degraded", self._error
        return "ok", None

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except _UNREACHABLE as exc:  # closing sockets to a dead server: nothing to lose
            log.debug("closing redis client: %s", exc)

    # -- raw operations, each guarded by _call ---------------------------------------

    async def _get_raw(self, key: str) -> bytes | None:
        async def op() -> bytes | None:
            try:
                data = await self._client.get(self.redis_key(key))
            except ResponseError:
                # WRONGTYPE: something else lives at our key; an empty value reads as garbage,
                # so the base class counts a miss and deletes it.
                return b""
            # str only if the URL asked for decode_responses; JSON bytes either way.
            return data.encode() if isinstance(data, str) else data

        return await self._call(op, None)

    async def _set_raw(self, key: str, data: bytes, ttl_s: float) -> None:
        async def op() -> None:
            await self._client.set(self.redis_key(key), data, px=max(1, round(ttl_s * 1000)))

        await self._call(op, None)

    async def _delete(self, key: str) -> None:
        async def op() -> None:
            await self._client.unlink(self.redis_key(key))

        await self._call(op, None)

    async def _clear(self) -> int:
        async def op() -> int:
            deleted = 0
            batch: list[bytes] = []
            # Deleting what SCAN already returned is safe: SCAN still visits every key
            # that exists for the whole iteration.
            async for name in self._client.scan_iter(match=self._match, count=_SCAN_COUNT):
                batch.append(name)
                if len(batch) >= _DELETE_BATCH:
                    deleted += int(await self._client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(await self._client.unlink(*batch))
            return deleted

        return await self._call(op, 0)

    async def _size(self) -> tuple[int, int]:
        async def op() -> tuple[int, int]:
            keys = 0
            sample: list[bytes] = []
            async for name in self._client.scan_iter(match=self._match, count=_SCAN_COUNT):
                keys += 1
                if len(sample) < _SIZE_SAMPLES:
                    sample.append(name)
            if not sample:
                return 0, 0
            async with self._client.pipeline(transaction=False) as pipe:
                for name in sample:
                    pipe.memory_usage(name)
                usages = await pipe.execute()
            # A sampled key may have expired or been evicted since SCAN saw it.
            sizes = [int(u) for u in usages if u is not None]
            return keys, round(sum(sizes) / len(sizes) * keys) if sizes else 0

        return await self._call(op, (0, 0))

    # -- failing open ----------------------------------------------------------------

    async def _call(self, op: Callable[[], Awaitable[R]], fallback: R) -> R:
        """Run `op` unless Redis is down and not yet due a retry; any Redis failure
        returns `fallback` instead of raising."""
        probe = False
        if self._down is not None:
            if self._probing or self._clock() < self._retry_at:
                return fallback
            # This request is the one probe; the others keep skipping until it ends.
            self._probing = probe = True
        try:
            result = await op()
        except MaxConnectionsError:
            # Our own pool is saturated: Redis is fine, this one operation just skips it.
            return fallback
        except _UNREACHABLE as exc:
            self._unreachable(exc, probe)
            return fallback
        except RedisError as exc:
            # Redis answered with an error: reachable, only this command failed.
            self._error = f"redis error: {type(exc).__name__}: {exc}"
            self._error_at = self._clock()
            self._reachable()
            return fallback
        finally:
            if probe:
                # Also on cancellation: the next request past the retry time probes instead.
                self._probing = False
        self._reachable()
        return result

    def _unreachable(self, exc: BaseException, probe: bool) -> None:
        now = self._clock()
        if self._down is None:
            self._backoff_s = self._retry_min_s
            log.warning("redis cache unavailable, serving without it: %s", exc)
        elif probe:
            # Only a failed probe backs off further; stragglers from before don't.
            self._backoff_s = min(self._backoff_s * 2, self._retry_max_s)
        else:
            return
        self._retry_at = now + self._backoff_s
        self._down = f"redis unavailable: {type(exc).__name__}: {exc}"

    def _reachable(self) -> None:
        if self._down is not None:
            log.warning("redis cache reachable again")
            self._down = None
            self._backoff_s = self._retry_min_s
