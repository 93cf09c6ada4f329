"""What the core reports, checked where it happens: index sizes and embedding batches at
scrape time, breaker cooldowns, streams dropped unread, the no-op default."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from mimiverse.gateway import Answer, Gateway, TextEvent
from mimiverse.routing.breaker import CircuitBreaker
from mimiverse.telemetry import NO_OBSERVER
from mimiverse.telemetry.metrics import Metrics
from tests.api.conftest import Serve
from tests.api.test_codebase import wait_ready
from tests.index.test_service import make_repo, settings
from tests.support.app_server import settings_for
from tests.support.embedder import BowEmbedder
from tests.telemetry.scrape import labels, scrape


async def test_index_sizes_and_embedding_batches(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    embedder = BowEmbedder()
    root = make_repo(tmp_path / "repo").resolve()
    app = serve(settings(embed_batch=3), {"bow": embedder}, repos=[str(root)])
    status = await wait_ready(http, app.url)
    assert (status["state"], status["files"], status["chunks"]) == ("ready", 4, 10), status

    m = await scrape(http, app.url)

    assert [m.get_value(f"mimiverse_index_{n}") for n in ("files", "chunks",
                                                          "pending_embeddings")] == [4, 10, 0]
    # A dimension probe, then 10 chunks in batches of 3: 1 + 4 batches, all through the router.
    assert embedder.calls == 5
    assert m.series("mimiverse_embedding_batch_seconds_count") == {labels(backend="bow"): 5}
    # Background embedding is not a client request.
    assert m.series("mimiverse_requests_total") == {}


def test_breaker_counts_each_cooldown_once() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    breaker.record_failure("a")
    assert breaker.times_opened == 0
    breaker.record_failure("b")  # opens
    breaker.record_failure("c")  # a stream still in flight fails: the same cooldown
    assert (breaker.state, breaker.times_opened) == ("open", 1)
    now[0] = 11
    assert breaker.allow()  # the half-open probe...
    breaker.record_failure("d")  # ...fails: a new cooldown
    assert (breaker.state, breaker.times_opened) == ("open", 2)
    now[0] = 22
    assert breaker.allow()
    breaker.record_success()
    assert (breaker.state, breaker.times_opened) == ("closed", 2)


async def events(answer: Answer) -> AsyncIterator[TextEvent]:
    yield TextEvent("delta", answer.text)
    yield TextEvent("done", answer=answer)


async def test_a_stream_dropped_unread_still_ends() -> None:
    """The client left between opening and the first read: nobody iterates the stream,
    so its `finally` never runs; dropping it must end it all the same."""
    gateway = Gateway(settings_for(("b", "ollama", "http://127.0.0.1:9")))
    metrics = Metrics(gateway)
    in_flight = {"task": "chat"}

    async def opening() -> AsyncIterator[TextEvent]:
        metrics.answered("chat", "b")  # as the router reports it
        return events(Answer("hi", "test-model", "b", 1.0))

    stream = await metrics.stream("chat", "test-model", opening())
    assert metrics.registry.get_sample_value("mimiverse_in_flight_requests", in_flight) == 1
    del stream
    gc.collect()
    await asyncio.sleep(0)  # the end is scheduled on the loop, not run inside the collector

    assert metrics.registry.get_sample_value("mimiverse_in_flight_requests", in_flight) == 0
    assert metrics.registry.get_sample_value("mimiverse_requests_total", {
        "task": "chat", "model": "test-model", "backend": "b", "status": "cancelled"}) == 1
    await gateway.aclose()


async def test_a_stream_read_to_the_end_is_counted_once() -> None:
    gateway = Gateway(settings_for(("b", "ollama", "http://127.0.0.1:9")))
    metrics = Metrics(gateway)

    async def opening() -> AsyncIterator[TextEvent]:
        metrics.answered("chat", "b")
        return events(Answer("hi", "test-model", "b", 1.0, prompt_tokens=5,
                             completion_tokens=2))

    stream = await metrics.stream("chat", "test-model", opening())
    assert [e.kind async for e in stream] == ["delta", "done"]
    del stream
    gc.collect()
    await asyncio.sleep(0)

    def value(name: str, **extra: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"task": "chat", **extra})

    assert value("mimiverse_requests_total", model="test-model", backend="b",
                 status="ok") == 1
    assert value("mimiverse_requests_total", model="test-model", backend="b",
                 status="cancelled") is None
    assert value("mimiverse_in_flight_requests") == 0
    assert value("mimiverse_tokens_total", model="test-model", direction="in") == 5
    assert value("mimiverse_tokens_total", model="test-model", direction="out") == 2
    await gateway.aclose()


async def test_without_metrics_the_gateway_reports_to_the_no_op_observer() -> None:
    gateway = Gateway(settings_for(("b", "ollama", "http://127.0.0.1:9")))
    assert gateway.observer is NO_OBSERVER and gateway.router.observer is NO_OBSERVER
    metrics = Metrics(gateway)
    gateway.observe(metrics)
    assert gateway.observer is metrics and gateway.router.observer is metrics
    await gateway.aclose()


async def test_an_embedding_while_opening_a_completion_does_not_label_it() -> None:
    """Repository context may embed a query before a completion is served from the cache:
    the completion is the cache's, not the embedding backend's."""
    gateway = Gateway(settings_for(("b", "ollama", "http://127.0.0.1:9")))
    metrics = Metrics(gateway)

    async def opening() -> AsyncIterator[TextEvent]:
        metrics.answered("embedding", "b")  # the query embedding, reported by the router
        return events(Answer("hi", "test-model", "cache", 0.1, cached=True))

    stream = await metrics.stream("completion", "test-model", opening())
    assert [e.kind async for e in stream] == ["delta", "done"]
    assert metrics.registry.get_sample_value("mimiverse_requests_total", {
        "task": "completion", "model": "test-model", "backend": "cache", "status": "ok"}) == 1
    await gateway.aclose()
