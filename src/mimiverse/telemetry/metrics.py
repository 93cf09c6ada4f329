"""Prometheus metrics of one app, served at GET /metrics.

One `Metrics` per app, with its own registry (tests build many apps in one process, and
the library's global registry would mix them). Three ways in:

- the core reports as it works (`Metrics` is the gateway's and router's Observer):
  per-task requests, durations, time to first token, tokens, in-flight, fallbacks,
  embedding batches;
- `RequestTelemetry` (telemetry/requests.py) counts every HTTP request by its route
  template;
- state the services already keep is copied in before each scrape (and, with several
  workers, every second): breakers (cooldowns, up), requests in flight per backend,
  cache counters and size, index sizes; and GPUs are read through NVML (telemetry/gpu.py).

With several workers (`serve --workers N`) every metric lives in prometheus_client's
multiprocess files (telemetry/multiprocess.py) and any worker's /metrics sums them all;
each gauge says how workers combine (`multiprocess_mode`).

Label values come only from configuration or fixed sets, never from a request: route =
a route template of the app or "other", backend = a configured name, "cache" (answered
without a model) or "none" (no backend answered), model = the model the answer names
(the route's, or the one an embedded backend runs: its catalog name or GGUF file name;
the route's when nothing answered). The metric names are a contract with deploy/
(Prometheus alerts, Grafana dashboards): keep them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import Collector

from mimiverse.config import TASKS, Task
from mimiverse.errors import BackendError
from mimiverse.telemetry import Observer, multiprocess

if TYPE_CHECKING:
    from mimiverse.gateway import Answer, Embeddings, Events, Gateway
    from mimiverse.index.service import CodebaseService, Job

log = logging.getLogger("mimiverse.telemetry")

CACHE = "cache"  # backend label of answers served without a model call
NONE = "none"  # backend label of requests no backend answered
OTHER = "other"  # route of a path the app has no route for; method outside METHODS
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Seconds. HTTP covers cache hits (~1 ms) to long streams; model calls start at ~10 ms.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

M = TypeVar("M", Counter, Gauge, Histogram)
T = TypeVar("T")


class _Children(Generic[M]):
    """`metric.labels(*values)`, remembered: the library's lookup costs a lock and label
    checks on every call, and this runs several times per request."""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


@dataclass(slots=True, eq=False)
class _Request:
    """One answer being followed, from opening to its end."""

    task: Task
    model: str
    started: float
    backend: str | None = None  # set by the router's report, or "cache"
    first_event: bool = False
    ended: bool = False
    unread: weakref.finalize[..., Any] | None = None  # ends a stream dropped unread


# The answer being opened in this task: the router's report lands on it. A context
# variable because the router is called deep inside the gateway's opening code.
_opening: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "mimiverse_opening", default=None
)


class Metrics(Observer):
    def __init__(
        self,
        gateway: Gateway,
        codebase: CodebaseService | None = None,
        collectors: Sequence[Collector] = (),
    ) -> None:
        self.gateway = gateway
        self.codebase = codebase
        self.registry = CollectorRegistry()
        self._backends = frozenset(gateway.router.backends) | {CACHE, NONE}
        r = self.registry
        self.http_requests = _Children(Counter(
            "mimiverse_http_requests", "HTTP requests by route template, method and status "
            "class", ["route", "method", "status"], registry=r))
        self.http_duration = _Children(Histogram(
            "mimiverse_http_request_duration_seconds", "HTTP request time, to the end of "
            "the body (whole stream)", ["route"], buckets=HTTP_BUCKETS, registry=r))
        self.requests = _Children(Counter(
            "mimiverse_requests", "Answers by task, model and backend; status ok, error or "
            "cancelled", ["task", "model", "backend", "status"], registry=r))
        self.duration = _Children(Histogram(
            "mimiverse_request_duration_seconds", "Time of answers that completed (ok)",
            ["task", "model", "backend"], buckets=REQUEST_BUCKETS, registry=r))
        self.ttft = _Children(Histogram(
            "mimiverse_time_to_first_token_seconds", "Time to the first event sent to the "
            "client", ["task", "model", "backend"], buckets=TTFT_BUCKETS, registry=r))
        self.tokens = _Children(Counter(
            "mimiverse_tokens", "Tokens models processed (in: prompt, out: generated), as "
            "the backends report them; cache answers count none",
            ["task", "model", "direction"], registry=r))
        self.in_flight = _Children(Gauge(
            "mimiverse_in_flight_requests", "Answers open now (waiting or streaming)",
            ["task"], registry=r, multiprocess_mode="livesum"))
        self.fallbacks = _Children(Counter(
            "mimiverse_fallbacks", "Times the router moved past a backend (failed, or "
            "its breaker open) to the next candidate", ["task", "backend"], registry=r))
        self.embedding_batches = _Children(Histogram(
            "mimiverse_embedding_batch_seconds", "Time of embedding batches that returned "
            "(requests and background indexing)", ["backend"], buckets=BATCH_BUCKETS,
            registry=r))
        for task in TASKS:
            self.in_flight(task).set(0)  # present from the first scrape
        self._state = ServiceState(gateway, codebase, r)
        # With several workers, the page is every worker's files summed, plus what this
        # worker alone reads (GPUs: the same for all of them).
        self._page = multiprocess.page_registry(r)
        for collector in collectors:
            self._page.register(collector)
        self._copying: asyncio.Task[None] | None = None

    # -- scraping --------------------------------------------------------------------

    def start(self) -> None:
        """With several workers, copy each worker's state every second, so the worker that
        answers a scrape shows the others' too (needs the running loop)."""
        if multiprocess.enabled() and self._copying is None:
            self._copying = asyncio.create_task(self._copy_state(), name="metrics state")

    async def _copy_state(self) -> None:
        while True:
            await self._state.copy(index=False)
            await asyncio.sleep(multiprocess.STATE_INTERVAL_S)

    async def aclose(self) -> None:
        if self._copying is not None:
            self._copying.cancel()
            await asyncio.gather(self._copying, return_exceptions=True)

    async def render(self) -> bytes:
        """The exposition text: state copied now, then every collector (NVML calls may
        block for a while, so that part runs in a thread)."""
        await self._state.copy(index=True)
        return await asyncio.to_thread(generate_latest, self._page)

    # -- what the gateway reports ----------------------------------------------------

    async def stream(self, task: Task, model: str, opening: Awaitable[Events]) -> Events:
        request = self._start(task, model)
        events = await self._opening(request, opening)
        watched = self._watch(request, events)
        # A stream nobody ever iterates (the client left between opening and the first
        # read) never runs its `finally`: end it when it is dropped instead.
        request.unread = weakref.finalize(
            watched, _end_soon, asyncio.get_running_loop(), self._end, request
        )
        request.unread.atexit = False
        return watched

    async def _watch(self, request: _Request, events: Events) -> Events:
        status = "cancelled"  # closed or cancelled before its final event
        error: Exception | None = None
        try:
            async for event in events:
                if not request.first_event:
                    request.first_event = True
                    if request.backend is None:
                        request.backend = CACHE  # the router reports before any event
                    # Labelled as the answer names its model (an embedded backend's own,
                    # whatever the route calls it; a cached answer's, its first giver's).
                    request.model = (event.answer.model if event.answer is not None
                                     else event.model) or request.model
                    self.ttft(request.task, request.model, self._backend(request)).observe(
                        time.perf_counter() - request.started)
                if event.answer is not None:
                    self._count_tokens(request, event.answer)
                    status = "ok"
                yield event
        except Exception as exc:
            status, error = "error", exc
            raise
        finally:
            self._end(request, status, error)
            closer = getattr(events, "aclose", None)
            if closer is not None:
                # Closed early: stop the upstream now, not at garbage collection; best
                # effort, as the router's own closing (the answer is over either way).
                with contextlib.suppress(Exception):
                    await closer()

    async def embedding(self, model: str, call: Awaitable[Embeddings]) -> Embeddings:
        request = self._start("embedding", model)
        result = await self._opening(request, call)
        request.backend = CACHE if result.cached else result.backend
        request.model = result.model
        self._end(request, "ok")
        return result

    async def _opening(self, request: _Request, call: Awaitable[T]) -> T:
        """Await what opens an answer, with `request` as the one the router reports to;
        a failure there ends the request."""
        token = _opening.set(request)
        try:
            return await call
        except BaseException as exc:
            self._end(request, _status_of(exc), exc)
            raise
        finally:
            _opening.reset(token)

    def _start(self, task: Task, model: str) -> _Request:
        self.in_flight(task).inc()
        return _Request(task, model, time.perf_counter())

    def _end(self, request: _Request, status: str, exc: BaseException | None = None) -> None:
        if request.ended:
            return
        request.ended = True
        if request.unread is not None:
            request.unread.detach()
            request.unread = None
        self.in_flight(request.task).dec()
        if request.backend is None and isinstance(exc, BackendError) and exc.backend:
            request.backend = exc.backend
        backend = self._backend(request)
        self.requests(request.task, request.model, backend, status).inc()
        if status == "ok":
            self.duration(request.task, request.model, backend).observe(
                time.perf_counter() - request.started)

    def _count_tokens(self, request: _Request, answer: Answer) -> None:
        if answer.cached:
            return  # the model did no work for this one
        if answer.prompt_tokens:
            self.tokens(request.task, request.model, "in").inc(answer.prompt_tokens)
        if answer.completion_tokens:
            self.tokens(request.task, request.model, "out").inc(answer.completion_tokens)

    def _backend(self, request: _Request) -> str:
        backend = request.backend
        return backend if backend is not None and backend in self._backends else NONE

    # -- what the router reports -----------------------------------------------------

    def answered(self, task: Task, backend: str) -> None:
        request = _opening.get()
        # The task check: opening a completion may embed a query first (repository context).
        if request is not None and request.task == task:
            request.backend = backend

    def fell_back(self, task: Task, backend: str) -> None:
        self.fallbacks(task, backend).inc()

    def embedding_batch(self, backend: str, seconds: float) -> None:
        self.embedding_batches(backend).observe(seconds)

    # -- what the HTTP middleware reports --------------------------------------------

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests(route, method, f"{status // 100}xx").inc()
        self.http_duration(route).observe(seconds)


class ServiceState:
    """What the services keep (breakers, balancer, cache, index) as metrics, copied in by
    `copy()`. Counts the services keep are added as their increase since the last copy."""

    def __init__(self, gateway: Gateway, codebase: CodebaseService | None,
                 r: CollectorRegistry) -> None:
        self.gateway = gateway
        self.codebase = codebase
        self.up = _Children(Gauge(
            "mimiverse_backend_up", "1 while the router sends requests to the backend "
            "(breaker closed, probes passing); with several workers, in all of them",
            ["backend", "kind"], registry=r, multiprocess_mode="livemin"))
        self.cooldowns = _Children(Counter(
            "mimiverse_backend_cooldowns", "Times the backend's breaker opened",
            ["backend"], registry=r))
        self.backend_in_flight = _Children(Gauge(
            "mimiverse_backend_in_flight", "Requests open on the backend now (all tasks)",
            ["backend"], registry=r, multiprocess_mode="livesum"))
        self.lookups = _Children(Counter(
            "mimiverse_cache_requests", "Cache lookups", ["result"], registry=r))
        self.entries: Gauge | None = None
        self.bytes: Gauge | None = None
        # Only the memory cache: sizing Redis means a SCAN of its keys at every scrape,
        # and every replica would report the same shared number.
        if gateway.cache.kind == "memory":
            self.entries = Gauge("mimiverse_cache_entries", "Entries in the in-process "
                                 "caches (all workers)", registry=r, multiprocess_mode="livesum")
            self.bytes = Gauge("mimiverse_cache_bytes", "Bytes of values in the in-process "
                               "caches (all workers)", registry=r, multiprocess_mode="livesum")
        # The latest reading wins: every worker reads the same index.
        self.index: tuple[Gauge, Gauge, Gauge] | None = None
        if codebase is not None:
            self.index = tuple(  # type: ignore[assignment]
                Gauge(name, text, registry=r, multiprocess_mode="livemostrecent")
                for name, text in (
                    ("mimiverse_index_files", "Files indexed, all repositories"),
                    ("mimiverse_index_chunks", "Chunks indexed, all repositories"),
                    ("mimiverse_index_pending_embeddings",
                     "Chunks waiting for their vector, all repositories"),
                ))
        self._seen: dict[tuple[str, str], int] = {}

    def _advance(self, counter: Counter, key: tuple[str, str], total: int) -> None:
        grown = total - self._seen.get(key, 0)
        if grown > 0:
            counter.inc(grown)
            self._seen[key] = total

    async def copy(self, *, index: bool) -> None:
        router = self.gateway.router
        for name, status in router.status().items():
            self.up(name, status.kind).set(1.0 if status.healthy else 0.0)
            self._advance(self.cooldowns(name), ("cooldowns", name),
                          router.breakers[name].times_opened)
            self.backend_in_flight(name).set(router.balancer.load[name].in_flight)
        cache = self.gateway.cache
        self._advance(self.lookups("hit"), ("cache", "hit"), cache.hits)
        self._advance(self.lookups("miss"), ("cache", "miss"), cache.misses)
        if self.entries is not None and self.bytes is not None:
            stats = await cache.stats()
            self.entries.set(stats.keys)
            self.bytes.set(stats.bytes)
        if index and self.index is not None and self.codebase is not None:
            sizes = await asyncio.to_thread(_index_sizes, list(self.codebase.jobs.values()))
            for gauge, value in zip(self.index, sizes, strict=True):
                gauge.set(value)


def _index_sizes(jobs: Sequence[Job]) -> tuple[int, int, int]:
    files = chunks = pending = 0
    for job in jobs:
        try:
            stats = job.store.stats(job.repo)
        except Exception as exc:  # a store closing or being replaced: skip it this time
            log.debug("index stats unavailable: %s", exc)
            continue
        files += stats.files
        chunks += stats.chunks
        pending += stats.pending_embeddings
    return files, chunks, pending


def _end_soon(loop: asyncio.AbstractEventLoop, end: Callable[[_Request, str], None],
              request: _Request) -> None:
    """Garbage collection may run anywhere, even inside a metric's (non-reentrant) lock:
    only schedule the end on the loop from here."""
    if not request.ended and not loop.is_closed():
        loop.call_soon_threadsafe(end, request, "cancelled")


def _status_of(exc: BaseException) -> str:
    # Cancelled: the client went away (or single-flight abandoned the call).
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
