"""Balancing between a task's backends, end to end: our server in front of three loopback
OpenAI-compatible servers. Shares are asserted by counting the requests each server
received; a "slow" server holds its requests (a long delay before the first token), so
what is in flight is fixed by the test, not by timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from mimiverse.config import Settings, load_settings
from mimiverse.routing.balance import LATENCY_REFRESH_S, STICKY_SLACK, Balancer, _rendezvous
from tests.servers.harness import ServerHandle, run_in_thread
from tests.servers.openai_server import OpenAIApp
from tests.support.app_server import AppServer, serve_app

COMPLETIONS = "/v1/completions"
NAMES = ("a", "b", "c")


@pytest.fixture
def servers() -> Iterator[dict[str, ServerHandle]]:
    handles = {name: run_in_thread(OpenAIApp()) for name in NAMES}
    yield handles
    for handle in handles.values():
        handle.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        yield client


def balanced(servers: dict[str, ServerHandle], balance: str, weights: dict[str, float] | None
             = None, **overrides: Any) -> Settings:
    weights = weights or {}
    return load_settings(
        None,
        backends=[{"name": n, "kind": "openai", "url": servers[n].url,
                   "weight": weights.get(n, 1.0)} for n in NAMES],
        models={
            "completion": {"model": "test-model", "family": "qwen2.5-coder",
                           "backends": list(NAMES), "balance": balance},
            "chat": {"model": "test-model", "backends": list(NAMES), "balance": balance},
            "embedding": {"model": "test-embed", "backends": list(NAMES)},
        },
        **overrides,
    )


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[AppServer] = []

    def start(settings: Settings) -> AppServer:
        started.append(serve_app(settings))
        return started[-1]

    yield start
    for app in started:
        app.stop()


def counts(servers: dict[str, ServerHandle]) -> dict[str, int]:
    return {n: servers[n].behaviour.requests[COMPLETIONS] for n in NAMES}


async def fim(http: httpx.AsyncClient, app: AppServer, i: int, path: str | None = None) -> str:
    body: dict[str, Any] = {"prefix": f"x{i} = ", "temperature": 0, "max_tokens": 2}
    if path is not None:
        body["path"] = path
    r = await http.post(f"{app.url}/api/ai/fim", json=body)
    assert r.status_code == 200, r.text
    backend: str = r.json()["backend"]
    return backend


async def hold(http: httpx.AsyncClient, app: AppServer, server: ServerHandle, i: int,
               path: str | None = None) -> asyncio.Task[str]:
    """A request the (slow) `server` holds: returns once the server has it."""
    before = server.behaviour.requests[COMPLETIONS]
    task = asyncio.create_task(fim(http, app, 1000 + i, path))
    await server.behaviour.wait_until(lambda b: b.requests[COMPLETIONS] > before, 10)
    return task


async def release(*tasks: asyncio.Task[str]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_ordered_sends_everything_to_the_first_backend(
    servers: dict[str, ServerHandle], serve: Any, http: httpx.AsyncClient
) -> None:
    app = serve(balanced(servers, "ordered"))
    for i in range(6):
        assert await fim(http, app, i) == "a"
    assert counts(servers) == {"a": 6, "b": 0, "c": 0}


async def test_least_busy_avoids_the_backend_holding_a_request(
    servers: dict[str, ServerHandle], serve: Any, http: httpx.AsyncClient
) -> None:
    app = serve(balanced(servers, "least-busy"))
    servers["a"].behaviour.delay_s = 60  # "a" is slow: its request stays in flight
    held = await hold(http, app, servers["a"], 0)
    try:
        answered = [await fim(http, app, i) for i in range(10)]
        # Nothing in flight on b and c: they take turns (fewest answers first).
        assert answered == ["b", "c"] * 5
        assert counts(servers) == {"a": 1, "b": 5, "c": 5}
        models = (await http.get(f"{app.url}/api/models/available")).json()["models"]
        completion = models["completion"]
        assert completion["balance"] == "least-busy"
        assert {b["name"]: (b["in_flight"], b["share"]) for b in completion["backends"]} == {
            "a": (1, 0.0), "b": (0, 0.5), "c": (0, 0.5)}
        page = (await http.get(f"{app.url}/metrics")).text
        assert 'mimiverse_backend_in_flight{backend="a"} 1.0' in page
        assert 'mimiverse_backend_in_flight{backend="b"} 0.0' in page
        assert ('mimiverse_requests_total{backend="b",model="test-model",status="ok",'
                'task="completion"} 5.0') in page
    finally:
        await release(held)


async def test_least_busy_follows_weights(
    servers: dict[str, ServerHandle], serve: Any, http: httpx.AsyncClient
) -> None:
    # "a" is out of the way (one held request), b has twice c's weight.
    app = serve(balanced(servers, "least-busy", {"b": 2.0}))
    servers["a"].behaviour.delay_s = 60
    held = await hold(http, app, servers["a"], 0)
    try:
        answered = [await fim(http, app, i) for i in range(9)]
        assert answered == ["b", "c", "b", "b", "c", "b", "b", "c", "b"]
        assert counts(servers) == {"a": 1, "b": 6, "c": 3}
    finally:
        await release(held)


async def test_latency_prefers_the_backend_that_answers_first(
    servers: dict[str, ServerHandle], serve: Any, http: httpx.AsyncClient
) -> None:
    app = serve(balanced(servers, "latency"))
    balancer = app.gateway.router.balancer
    # Moving averages as measured earlier (the test sets them: no timing in the test).
    balancer.first_token("a", 0.5)
    balancer.first_token("b", 0.005)
    balancer.first_token("c", 0.05)
    answered = [await fim(http, app, i) for i in range(4)]
    assert set(answered) <= {"b", "c"}  # "a" stays 10x behind whatever b and c measure
    assert counts(servers)["a"] == 0
    # A request in flight counts: b (30 ms) holding one expects 60 ms, c (50 ms) none.
    balancer.load["b"].first_token_s, balancer.load["c"].first_token_s = 0.03, 0.05
    servers["b"].behaviour.delay_s = 60
    held = await hold(http, app, servers["b"], 0)
    try:
        assert await fim(http, app, 99) == "c"
        assert counts(servers)["a"] == 0
    finally:
        await release(held)


async def test_the_same_file_stays_on_one_backend_until_it_is_overloaded(
    servers: dict[str, ServerHandle], serve: Any, http: httpx.AsyncClient
) -> None:
    app = serve(balanced(servers, "least-busy"))
    files = [f"src/m{i}.py" for i in range(6)]
    home = {f: max(NAMES, key=lambda n: _rendezvous(f, n, 1.0)) for f in files}
    for round_ in range(3):
        for f in files:
            assert await fim(http, app, 10 * round_ + files.index(f), f) == home[f]
    assert counts(servers) == {n: 3 * list(home.values()).count(n) for n in NAMES}
    # Its backend slows down: requests for the file pile up there until it has
    # STICKY_SLACK more in flight than the least busy one; the next one goes elsewhere.
    f = files[0]
    slow = servers[home[f]]
    slow.behaviour.delay_s = 60
    held = [await hold(http, app, slow, i, f) for i in range(int(STICKY_SLACK) + 1)]
    try:
        assert await fim(http, app, 500, f) != home[f]
    finally:
        await release(*held)


async def test_a_failing_backend_is_taken_out_and_falls_back_before_the_first_token(
    servers: dict[str, ServerHandle], serve: Any, http: httpx.AsyncClient
) -> None:
    app = serve(balanced(servers, "least-busy", breaker={"failures": 1, "cooldown_s": 600}))
    servers["a"].behaviour.mode = "fail"
    answered = [await fim(http, app, i) for i in range(6)]
    # The first request tried "a" (its turn), failed over to b; then a's breaker is open.
    assert answered[0] == "b" and "a" not in answered
    assert servers["a"].behaviour.requests[COMPLETIONS] == 1
    assert counts(servers)["b"] + counts(servers)["c"] == 6


def test_overload_check_uses_in_flight_per_weight() -> None:
    balancer = Balancer({"x": 1.0, "y": 1.0})
    home = max(("x", "y"), key=lambda n: _rendezvous("f.py", n, 1.0))
    other = "y" if home == "x" else "x"
    for _ in range(int(STICKY_SLACK)):
        balancer.started(home)
    assert balancer.order("completion", "least-busy", ["x", "y"], "f.py")[0] == home
    balancer.started(home)
    assert balancer.order("completion", "least-busy", ["x", "y"], "f.py")[0] == other
    # Not usable (breaker open): the file's requests go to the others meanwhile.
    balancer.finished(home)
    order = balancer.order("completion", "least-busy", ["x", "y"], "f.py",
                           usable=lambda n: n != home)
    assert order[0] == other


def test_latency_probes_unmeasured_and_stale_backends_one_request_at_a_time() -> None:
    now = [1000.0]
    balancer = Balancer({"x": 1.0, "y": 1.0}, clock=lambda: now[0])
    names = ["x", "y"]
    # Nothing measured: x gets a probe; while it is in flight, y gets the next one.
    assert balancer.order("completion", "latency", names)[0] == "x"
    balancer.started("x")
    assert balancer.order("completion", "latency", names)[0] == "y"
    balancer.started("y")
    balancer.first_token("x", 2.0)  # slow (a model load, say)
    balancer.finished("x")
    balancer.first_token("y", 0.01)
    balancer.finished("y")
    assert balancer.order("completion", "latency", names) == ["y", "x"]
    # Half a minute on, x's figure is stale: one request checks it again...
    now[0] += LATENCY_REFRESH_S + 1
    balancer.first_token("y", 0.01)
    assert balancer.order("completion", "latency", names)[0] == "x"
    balancer.started("x")
    # ...and only one: the next goes to y while the probe is out.
    assert balancer.order("completion", "latency", names)[0] == "y"
    balancer.first_token("x", 0.005)  # faster now: its average moves a fifth of the way
    balancer.finished("x")
    assert balancer.load["x"].first_token_s == pytest.approx(2.0 - 0.2 * 1.995)
    assert balancer.order("completion", "latency", names) == ["y", "x"]  # fresh again
