"""Background readiness probes: a backend that offers `probe(models)` is checked every
`health_interval_s` seconds, and routing skips it while its last probe failed.

A request then never waits for a dead backend to time out; it goes straight to the next
candidate. When a probe succeeds again the backend is back in routing at once, and its
circuit breaker is closed too (the failures that opened it are what the probe has now
seen healed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mimiverse.backends.base import Backend
from mimiverse.errors import BackendError, BackendTimeout

log = logging.getLogger("mimiverse.health")


@runtime_checkable
class Probed(Protocol):
    async def probe(self, models: Sequence[str]) -> None:
        """Return if ready to serve `models`; raise a BackendError saying why not."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    healthy: bool
    checked_at: float  # wall clock (epoch seconds)
    latency_ms: float
    error: str | None


class HealthMonitor:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        models_of: Callable[[str], Sequence[str]],
        on_recovery: Callable[[str], None],
    ) -> None:
        self._probed = {name: b for name, b in backends.items() if isinstance(b, Probed)}
        self._backends = backends
        self._models_of = models_of
        self._on_recovery = on_recovery
        self._results: dict[str, ProbeResult] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def names(self) -> list[str]:
        """Backends that have a probe."""
        return list(self._probed)

    def result(self, name: str) -> ProbeResult | None:
        return self._results.get(name)

    def allows(self, name: str) -> bool:
        """False only while the backend's last probe failed (unprobed backends are tried)."""
        result = self._results.get(name)
        return result is None or result.healthy

    def start(self) -> None:
        """One loop per probed backend, in the running event loop; idempotent."""
        if self._tasks:
            return
        for name in self._probed:
            self._tasks.append(asyncio.create_task(self._loop(name), name=f"probe {name}"))

    async def check(self, name: str) -> ProbeResult:
        """Probe `name` now and record the verdict (routing follows it at once)."""
        backend = self._probed[name]
        limit = backend.config.timeouts.connect_s + 1.0
        started = time.perf_counter()
        error: str | None = None
        try:
            async with asyncio.timeout(limit):
                await backend.probe(self._models_of(name))
        except TimeoutError:
            error = BackendTimeout(f"probe timed out after {limit:g}s", backend=name).reason
        except BackendError as exc:
            error = exc.reason
        result = ProbeResult(
            healthy=error is None, checked_at=time.time(),
            latency_ms=round((time.perf_counter() - started) * 1000, 3), error=error,
        )
        previous = self._results.get(name)
        self._results[name] = result
        if previous is not None and previous.healthy != result.healthy:
            if result.healthy:
                log.info("%s is ready again: back in routing", name)
                self._on_recovery(name)
            else:
                log.warning("%s failed its readiness probe, skipped by routing: %s", name, error)
        return result

    async def _loop(self, name: str) -> None:
        interval = self._backends[name].config.health_interval_s
        while True:
            try:
                await self.check(name)
            except Exception:  # a bug in a probe must not end the loop silently forever
                log.exception("probing %s failed unexpectedly", name)
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
