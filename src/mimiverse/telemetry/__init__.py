"""What the core reports to telemetry, and the default that records nothing.

The gateway and the router talk to an `Observer`; that is their whole coupling to
metrics. Until `create_app` attaches `telemetry.metrics.Metrics`, every report is a no-op,
so the core (and its unit tests) run without Prometheus.

The gateway marks its public answer methods with `observed_stream(task)` /
`observed_embedding`: the observer sees each answer open, flow and end, wherever it came
from (a backend, the cache, type-ahead reuse) and whoever asked (our API, the compatible
ones, the CLI).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from mimiverse.config import Task
    from mimiverse.gateway import Embeddings, Events
    from mimiverse.routing.router import Router


class Observer:
    """Reports from the core. Every method here does nothing."""

    async def stream(self, task: Task, model: str, opening: Awaitable[Events]) -> Events:
        """Follow one answer of `task`: `opening` opens it (raising if it cannot); the
        events it returns are what the caller will iterate."""
        return await opening

    async def embedding(self, model: str, call: Awaitable[Embeddings]) -> Embeddings:
        """Follow one embedding request."""
        return await call

    def answered(self, task: Task, backend: str) -> None:
        """The router: `backend` gave the first token (or the vectors) for `task`."""

    def fell_back(self, task: Task, backend: str) -> None:
        """The router moved past `backend` (it failed, or its breaker is open) to the
        next candidate for `task`."""

    def embedding_batch(self, backend: str, seconds: float) -> None:
        """One `embed_batch` call on `backend` returned after `seconds`."""


NO_OBSERVER = Observer()


class Observed(Protocol):
    """What the decorators need of the object whose methods they wrap."""

    observer: Observer
    router: Router


S = TypeVar("S", bound=Observed)
P = ParamSpec("P")
StreamMethod = Callable[Concatenate[S, P], Awaitable["Events"]]
EmbedMethod = Callable[Concatenate[S, P], Awaitable["Embeddings"]]


def observed_stream(task: Task) -> Callable[[StreamMethod[S, P]], StreamMethod[S, P]]:
    """Report every answer the decorated method opens to `self.observer`."""

    def decorate(method: StreamMethod[S, P]) -> StreamMethod[S, P]:
        @functools.wraps(method)
        async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Events:
            model = self.router.route(task).model
            return await self.observer.stream(task, model, method(self, *args, **kwargs))

        return wrapper

    return decorate


def observed_embedding(method: EmbedMethod[S, P]) -> EmbedMethod[S, P]:
    """Report every embedding request of the decorated method to `self.observer`."""

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Embeddings:
        model = self.router.route("embedding").model
        return await self.observer.embedding(model, method(self, *args, **kwargs))

    return wrapper
