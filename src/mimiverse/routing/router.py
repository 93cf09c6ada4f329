"""The router: picks a backend for a task and keeps streams honest.

- Candidates are tried in the order the route's balancing strategy gives (routing/balance.py:
  as configured, least busy, or lowest latency); a backend is skipped while its breaker is
  open.
- Falling back happens only before the first token: once text has reached the client, a
  failure ends the stream with StreamInterrupted (never text from a second backend).
- First-token, between-token and total timeouts are enforced here, the same for every kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mimiverse.backends.base import NO_EXTRAS, Backend, Delta, EmbedExtras
from mimiverse.config import TASKS, ModelRoute, Settings, Task, Timeouts
from mimiverse.errors import (
    AllBackendsFailed,
    BackendError,
    BackendTimeout,
    StreamInterrupted,
    Unsupported,
)
from mimiverse.routing.balance import Balancer
from mimiverse.routing.breaker import CircuitBreaker
from mimiverse.routing.health import HealthMonitor
from mimiverse.telemetry import NO_OBSERVER, Observer

StreamFactory = Callable[[Backend, str], AsyncIterator[Delta]]
T = TypeVar("T")
log = logging.getLogger(__name__)


class RoutedStream:
    """A stream that already produced its first delta on `backend`.

    Iterate it for the rest; close it (`aclose`) to cancel the upstream request.
    """

    def __init__(
        self,
        router: Router,
        backend: Backend,
        model: str,
        first: Delta | None,
        upstream: AsyncIterator[Delta],
        watch: TokenWatch,
    ) -> None:
        self.router = router
        self.backend = backend
        self.model = model
        self._first = first
        self._upstream = upstream
        self._watch = watch
        # Called once, when the stream ends (or, failing that, when it is collected): the
        # backend's request is no longer in flight.
        self._release = weakref.finalize(self, router.balancer.finished, backend.name)
        self._closed = first is None
        if self._closed:
            watch.stop()
            self._release()

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delta]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        watch = self._watch
        watch.follow()
        try:
            while not self._closed:
                watch.waiting()
                try:
                    delta = await anext(self._upstream)
                except StopAsyncIteration:
                    self._closed = True
                    self.router.breakers[self.backend.name].record_success()
                    return
                except BackendError as exc:
                    self._fail(exc.reason)
                    raise StreamInterrupted(exc.reason, backend=self.backend.name) from exc
                except asyncio.CancelledError:
                    if not watch.expired():
                        raise
                    self._fail(watch.why())
                    raise StreamInterrupted(watch.why(), backend=self.backend.name) from None
                watch.holding()
                yield delta
        finally:
            watch.stop()
            self._release()

    def _fail(self, reason: str) -> None:
        self._closed = True
        self.router.breakers[self.backend.name].record_failure(reason)

    async def aclose(self) -> None:
        if not self._closed:  # stopped early while healthy (a stop rule, the client left)
            self.router.breakers[self.backend.name].record_success()
        self._closed = True
        self._watch.stop()
        self._release()
        closer = getattr(self._upstream, "aclose", None)
        if closer is not None:
            await closer()


class TokenWatch:
    """A stream's time limits: the first token within `first_token_s`, each next one
    within `between_tokens_s`, all before `total_s`; the wait for a token is what is
    timed, never a consumer holding one. On expiry the waiting task is cancelled (as
    asyncio.timeout does) and `expired()` tells that cancellation from any other.

    Per token it mostly only notes the time: one timer, armed by a wait when none is
    pending (or it would fire too late) and re-arming itself when it fires early (a timer
    moved per token, plus one asyncio.timeout for the first token, cost ~7% of the
    gateway's CPU per request)."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.loop = asyncio.get_running_loop()
        self._first_s = timeouts.first_token_s
        self._limit_s = min(timeouts.first_token_s, timeouts.total_s)  # of the current wait
        self._between_s = timeouts.between_tokens_s
        self._deadline = self.loop.time() + timeouts.total_s
        self._since: float | None = None  # when the current wait began; None: holding
        self._task: asyncio.Task[Any] | None = asyncio.current_task()  # the one waiting
        self._timer: asyncio.TimerHandle | None = None
        self._cancelled = False
        self._first = True  # waiting for the first token

    def follow(self) -> None:
        """The current task waits from now on (a stream opened in a request's task may be
        read in another: a streaming response's own)."""
        self._task = asyncio.current_task()

    def waiting(self) -> None:
        """A wait for the next token begins."""
        self._since = self.loop.time()
        due = self._due(self._since)
        # Armed when none is pending, or when this wait's limit ends before the pending
        # one fires (the first wait after the first token: a shorter limit).
        if self._timer is None or self._timer.when() > due:
            self.stop()
            self._timer = self.loop.call_at(due, self._check)

    def holding(self) -> None:
        """A token came: the consumer holds it; the next wait is a between-tokens one."""
        self._since = None
        self._first = False
        self._limit_s = self._between_s

    def _due(self, since: float) -> float:
        return min(since + self._limit_s, self._deadline)

    def _check(self) -> None:
        self._timer = None
        if self._since is None or self._task is None:
            return  # holding: the next wait arms the timer again
        due = self._due(self._since)
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._check)
            return
        # The task is suspended in its wait for the token: the cancellation lands there.
        self._cancelled = True
        self._task.cancel()

    def expired(self) -> bool:
        """True when a CancelledError is this watch's doing and nobody else's (then it
        is taken back, as asyncio.timeout does)."""
        return self._cancelled and self._task is not None and self._task.uncancel() == 0

    def why(self) -> str:
        if self.loop.time() >= self._deadline:
            return "total time limit reached"
        if self._first:
            return f"no first token within {self._first_s:g}s"
        return f"no token for {self._between_s:g}s"

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass(frozen=True, slots=True)
class BackendStatus:
    name: str
    kind: str
    state: str  # closed | open | half-open
    healthy: bool
    consecutive_failures: int
    last_error: str | None
    cooldown_left_s: float


class Router:
    def __init__(
        self,
        settings: Settings,
        backends: dict[str, Backend],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.breakers = {
            name: CircuitBreaker(settings.breaker.failures, settings.breaker.cooldown_s, clock)
            for name in backends
        }
        self.observer: Observer = NO_OBSERVER  # what it reports to (the app's metrics)
        weights = {b.name: b.weight for b in settings.backends}
        self.balancer = Balancer({name: weights.get(name, 1.0) for name in backends}, clock)
        # Backends with a readiness probe (triton) are skipped while their last one failed.
        self.health = HealthMonitor(backends, self._routed_models, self._recovered)
        self.warming: set[str] = set()  # backends whose warm-up (download, load) is running

    def start_probes(self) -> None:
        """Start the background readiness probes (needs the running event loop)."""
        self.health.start()

    async def warm_up(self, answers: dict[str, bool] | None = None) -> None:
        """Warm backends up (load in-process models); a failure is logged, not raised:
        the backend's first request will say what is wrong.

        A backend that only ever stands behind others (the embedded model behind a local
        Ollama) warms up only when, on some route, none of those before it answers: a
        running Ollama means no download and no model held in memory for nothing.
        `answers`: whether each backend answered a health check just now (else asked)."""
        standby = [n for n in self.backends if self._always_behind(n)]
        await self._warm([n for n in self.backends if n not in standby])
        answers = dict(answers or {})  # each backend before them is asked at most once
        needed = [n for n in standby if not await self._covered(n, answers)]
        await self._warm(needed)

    async def _warm(self, names: list[str]) -> None:
        self.warming.update(names)
        results = await asyncio.gather(*(self._warm_one(n) for n in names),
                                       return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Exception):
                log.warning("backend %s did not warm up: %s", name, result)

    async def _warm_one(self, name: str) -> None:
        try:
            await self.backends[name].warm_up()
        finally:
            self.warming.discard(name)

    def _routes_of(self, name: str) -> list[list[str]]:
        return [r.backends for r in (self.route(t) for t in TASKS) if name in r.backends]

    def _always_behind(self, name: str) -> bool:
        routes = self._routes_of(name)
        return bool(routes) and all(r.index(name) > 0 for r in routes)

    async def _covered(self, name: str, answers: dict[str, bool]) -> bool:
        """Whether on every route of `name` a backend before it answers its health check
        (asked in route order, stopping at the first that answers)."""
        for route in self._routes_of(name):
            for before in route[: route.index(name)]:
                if before not in answers:
                    try:
                        await self.check(before)
                        answers[before] = True
                    except BackendError:
                        answers[before] = False
                if answers[before]:
                    break
            else:
                return False
        return True

    def _routed_models(self, name: str) -> list[str]:
        routes = [self.route(t) for t in TASKS]
        if self.settings.models.vision is not None:
            routes.append(self.settings.models.vision)
        return [r.model for r in routes if name in r.backends]

    def _recovered(self, name: str) -> None:
        self.breakers[name].record_success()  # the probe saw it healed: route to it again

    def route(self, task: Task) -> ModelRoute:
        return self.settings.models.route(task)

    def candidates(self, task: Task, affinity: str | None = None,
                   route: ModelRoute | None = None) -> Sequence[Backend]:
        """The route's backends (the task's, unless given) in the order its balancing
        strategy gives for this request (`affinity`: what should stay on one backend, a
        completion's file)."""
        route = route or self.route(task)
        order = self.balancer.order(task, route.balance, route.backends, affinity, self._usable)
        return [self.backends[name] for name in order]

    def _usable(self, name: str) -> bool:
        return self.breakers[name].state == "closed" and self.health.allows(name)

    def named_route(self, name: str) -> ModelRoute | None:
        """A task's route by name, or the vision route (None when not configured)."""
        if name == "vision":
            return self.settings.models.vision
        return next((self.route(t) for t in TASKS if t == name), None)

    async def open_stream(
        self, task: Task, start: StreamFactory, exclude: Collection[str] = (),
        route: ModelRoute | None = None, affinity: str | None = None,
    ) -> RoutedStream:
        """Start `start(backend, model)` on the first backend that yields a first delta;
        `exclude`: backends not to try (they failed this request already); `route` (the
        vision route) stands in for the task's own; `affinity`: what should stay on one
        backend (a completion's file)."""
        route = route or self.route(task)
        model = route.model

        async def attempt(backend: Backend) -> RoutedStream:
            watch = TokenWatch(backend.config.timeouts)
            upstream = start(backend, model)
            watch.waiting()
            started = time.perf_counter()
            try:
                first: Delta | None = await anext(upstream)
            except StopAsyncIteration:
                first = None  # an empty answer is still an answer
            except BaseException as exc:
                timed_out = isinstance(exc, asyncio.CancelledError) and watch.expired()
                watch.stop()
                await _close(upstream)
                if timed_out:
                    raise BackendTimeout(watch.why(), backend=backend.name) from None
                raise
            watch.holding()
            self.balancer.first_token(backend.name, time.perf_counter() - started)
            # What answered, not what was asked for: an embedded model behind a route
            # named for an Ollama model is still itself (the request keeps the route's
            # name, so cache keys and prompts do not depend on who answers).
            return RoutedStream(self, backend, backend.served_model(model), first, upstream,
                                watch)

        return await self._first_to_answer(
            task, attempt, exclude, self.candidates(task, affinity, route))

    async def embed(self, texts: Sequence[str], extras: EmbedExtras = NO_EXTRAS
                    ) -> tuple[list[list[float]], Backend, str]:
        """Embed with the first embedding backend that answers (and honours `extras`: a
        backend of the client's protocol gets them verbatim); returns vectors, backend,
        model."""
        model = self.route("embedding").model
        used = extras.used_fields()

        async def attempt(backend: Backend) -> tuple[list[list[float]], Backend, str]:
            missing = backend.chat_gaps(used)
            if missing:  # another candidate may: _first_to_answer moves on to it
                raise Unsupported(f"cannot honour {', '.join(missing)}", backend=backend.name)
            own = extras.fields if backend.kind == extras.kind else ()
            limit = backend.config.timeouts.total_s
            try:
                async with asyncio.timeout(limit):
                    started = time.perf_counter()
                    vectors = await backend.embed_batch(model, texts, own)
                    took = time.perf_counter() - started
                    self.observer.embedding_batch(backend.name, took)
                    self.balancer.first_token(backend.name, took)
                    return vectors, backend, backend.served_model(model)
            except TimeoutError:
                raise BackendTimeout(f"no answer within {limit:g}s",
                                     backend=backend.name) from None

        return await self._first_to_answer("embedding", attempt)

    async def _first_to_answer(
        self, task: Task, attempt: Callable[[Backend], Awaitable[T]],
        exclude: Collection[str] = (), candidates: Sequence[Backend] | None = None,
    ) -> T:
        """`attempt` each candidate (the task's, unless given) in order, skipping cooling
        ones and `exclude`; the breakers learn from every verdict. All failing ->
        AllBackendsFailed naming each backend and why."""
        failures: list[tuple[str, str]] = []
        errors: list[BackendError] = []
        for backend in candidates if candidates is not None else self.candidates(task):
            if backend.name in exclude:
                continue
            if failures:  # each candidate not answering adds one: we moved past the last
                self.observer.fell_back(task, failures[-1][0])
            breaker = self.breakers[backend.name]
            if not backend.supports(task):
                failures.append((backend.name, f"{backend.kind} cannot serve {task}"))
                continue
            if not self.health.allows(backend.name):
                failures.append((backend.name, _unready(self.health, backend.name)))
                continue
            if not breaker.allow():
                failures.append((backend.name, _cooling(breaker)))
                continue
            self.balancer.started(backend.name)  # a stream's end releases it (RoutedStream)
            try:
                result = await attempt(backend)
            except Unsupported as exc:
                self.balancer.finished(backend.name)
                breaker.release_probe()  # a capability gap, not a failure of the backend
                failures.append((backend.name, exc.reason))
                continue
            except BackendError as exc:
                self.balancer.finished(backend.name)
                breaker.record_failure(exc.reason)
                failures.append((backend.name, exc.reason))
                errors.append(exc)
                continue
            except BaseException:
                # Cancelled (client went away) or a bug: no verdict on the backend.
                self.balancer.finished(backend.name)
                breaker.release_probe()
                raise
            if isinstance(result, RoutedStream):
                breaker.record_first_token()  # its end (or failure) gives the full verdict
            else:
                self.balancer.finished(backend.name)
                breaker.record_success()
            self.balancer.answer(task, backend.name)
            self.observer.answered(task, backend.name)
            return result
        raise AllBackendsFailed(task, failures, errors)

    def status(self) -> dict[str, BackendStatus]:
        return {
            name: BackendStatus(
                name=name,
                kind=backend.kind,
                state=self.breakers[name].state,
                healthy=self.breakers[name].state == "closed" and self.health.allows(name),
                consecutive_failures=self.breakers[name].consecutive_failures,
                last_error=self.breakers[name].last_error,
                cooldown_left_s=round(self.breakers[name].cooldown_left(), 3),
            )
            for name, backend in self.backends.items()
        }

    async def check(self, name: str) -> None:
        """Actively probe one backend (readiness); raises a BackendError saying why not."""
        backend = self.backends[name]
        try:
            async with asyncio.timeout(backend.config.timeouts.connect_s + 1.0):
                await backend.check_health()
        except TimeoutError:
            raise BackendTimeout("health check timed out", backend=name) from None

    async def aclose(self) -> None:
        await self.health.aclose()
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))


def _unready(health: HealthMonitor, name: str) -> str:
    result = health.result(name)
    return f"failed its readiness probe: {result.error if result else 'unknown'}"


def _cooling(breaker: CircuitBreaker) -> str:
    return (
        f"cooling down ({breaker.cooldown_left():.1f}s left) after {breaker.consecutive_failures} "
        f"failures; last: {breaker.last_error}"
    )


async def _close(upstream: Any) -> None:
    closer = getattr(upstream, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):  # it already failed; closing is best effort
            await closer()
