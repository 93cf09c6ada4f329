"""A backend that hangs, dies mid-stream or answers garbage: what the client sees, how the
breaker takes it out of routing, the fallback serving meanwhile, and the half-open probe
that brings it back once it behaves. All over real HTTP against loopback protocol servers.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from tests.api.conftest import Serve
from tests.faults.support import breaker_state, sse_events, until
from tests.servers.behaviour import split_tokens
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer, settings_for

FAILURES = 2  # consecutive failures that open the breaker
COOLDOWN_S = 0.5  # long enough to see it open on a busy 2-core box, short for the suite
REPLY = "abcdefghijklmnopqrstuvwxyz0123456789"  # 9 test-server tokens
_prefixes = itertools.count()


def _start(serve: Serve, first: ServerHandle, second: ServerHandle) -> AppServer:
    return serve(settings_for(
        ("a", "ollama", first.url), ("b", "openai", second.url),
        timeouts={"first_token_s": 0.3, "between_tokens_s": 2.0},
        breaker={"failures": FAILURES, "cooldown_s": COOLDOWN_S},
    ))


async def _fim(http: httpx.AsyncClient, app: AppServer, path: str) -> httpx.Response:
    # A new prefix every time: a cached answer would never reach the router.
    return await http.post(f"{app.url}{path}", json={"prefix": f"p{next(_prefixes)} = "})


def _served_by(r: httpx.Response, path: str) -> str:
    assert r.status_code == 200, r.text
    if path.endswith("/stream"):
        kind, done = sse_events(r.text)[-1]
        assert kind == "done", r.text
        return str(done["backend"])
    return str(r.json()["backend"])


def _assert_failed_request(mode: str, r: httpx.Response) -> None:
    """What the client sees while backend `a` misbehaves (and its breaker is closed)."""
    if mode == "hang":  # no first token in time: falls back within the same request
        assert _served_by(r, "/api/ai/fim") == "b"
    elif mode == "die":  # 5 deltas already sent: no splicing, the stream ends in `error`
        assert r.status_code == 200
        events = sse_events(r.text)
        assert [k for k, _ in events] == ["delta"] * 5 + ["error"], events
        assert "".join(d["text"] for _, d in events[:5]) == "".join(split_tokens(REPLY)[:5])
        error = events[-1][1]["error"]
        assert error["type"] == "stream_interrupted" and error["backend"] == "a"
    else:  # malformed after the first token: nothing reached the client, so b answers
        assert _served_by(r, "/api/ai/fim") == "b"


@pytest.mark.parametrize(
    ("mode", "after_tokens", "path"),
    [("hang", 0, "/api/ai/fim"), ("die", 5, "/api/ai/fim/stream"),
     ("malformed", 2, "/api/ai/fim")],
)
async def test_breaker_cools_a_failing_backend_fallback_serves_probe_restores_it(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient, mode: str, after_tokens: int, path: str,
) -> None:
    app = _start(serve, ollama_server, openai_server)
    a = ollama_server.behaviour
    # Paced like a real engine, so each token arrives in its own read.
    a.configure(mode=mode, after_tokens=after_tokens, reply=REPLY, delay_s=0.02)

    for attempt in range(1, FAILURES + 1):
        _assert_failed_request(mode, await _fim(http, app, path))
        assert a.requests["/api/generate"] == attempt
    assert await breaker_state(http, app.url, "a") == "open"
    if mode == "hang":  # each hung upstream request was closed, not left running
        await a.wait_until(lambda b: b.cancelled == FAILURES, within_s=1.0)

    # Cooling: `a` is skipped outright and `b` answers.
    before_b = openai_server.behaviour.requests["/v1/completions"]
    assert _served_by(await _fim(http, app, path), path) == "b"
    assert a.requests["/api/generate"] == FAILURES
    assert openai_server.behaviour.requests["/v1/completions"] == before_b + 1

    # `a` heals; once the cooldown has passed, one half-open probe finds it and it serves.
    a.configure(mode="ok")
    served: list[str] = []

    async def served_by_a() -> bool:
        served.append(_served_by(await _fim(http, app, path), path))
        return served[-1] == "a"

    await until(served_by_a, "a half-open probe restoring backend a", within_s=COOLDOWN_S + 3)
    assert set(served[:-1]) <= {"b"}
    assert a.requests["/api/generate"] == FAILURES + 1  # exactly one probe
    assert await breaker_state(http, app.url, "a") == "closed"
    assert _served_by(await _fim(http, app, path), path) == "a"


async def test_a_failed_probe_reopens_the_breaker_for_another_cooldown(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = _start(serve, ollama_server, openai_server)
    a = ollama_server.behaviour
    a.configure(mode="fail")
    for _ in range(FAILURES):
        assert _served_by(await _fim(http, app, "/api/ai/fim"), "/api/ai/fim") == "b"
    assert await breaker_state(http, app.url, "a") == "open"

    async def probed() -> bool:
        r = await _fim(http, app, "/api/ai/fim")
        assert _served_by(r, "/api/ai/fim") == "b"  # the probe fails over within the request
        return a.requests["/api/generate"] == FAILURES + 1

    await until(probed, "the half-open probe", within_s=COOLDOWN_S + 3)
    # A new cooldown, not closed (a loaded machine may already be past that short cooldown,
    # at half-open again, by the time it asks).
    assert await breaker_state(http, app.url, "a") in ("open", "half-open")


async def test_only_backend_hanging_is_a_timeout_answer_naming_it(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("a", "ollama", ollama_server.url),
                             timeouts={"first_token_s": 0.3}))
    ollama_server.behaviour.mode = "hang"
    for path in ("/api/ai/fim", "/api/ai/fim/stream"):
        r = await http.post(f"{app.url}{path}", json={"prefix": f"{path} = "})
        # Every candidate timed out: 504 (503 when they fail in different ways).
        assert r.status_code == 504
        error: dict[str, Any] = r.json()["error"]
        assert error["type"] == "all_backends_failed"
        assert error["backends"] == [{"name": "a", "reason": "no first token within 0.3s"}]
    await ollama_server.behaviour.wait_until(lambda b: b.cancelled == 2, within_s=1.0)
    assert (await http.get(f"{app.url}/health/live")).status_code == 200


async def test_the_status_says_how_every_backend_failed(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    """All malformed before a first token: 502; timed out and malformed: 503."""
    app = serve(settings_for(("a", "ollama", ollama_server.url),
                             ("b", "openai", openai_server.url),
                             timeouts={"first_token_s": 0.3}))
    for server in (ollama_server, openai_server):
        server.behaviour.configure(mode="malformed", after_tokens=0)
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "malformed = "})
    assert (r.status_code, r.json()["error"]["type"]) == (502, "all_backends_failed")
    assert [b["name"] for b in r.json()["error"]["backends"]] == ["a", "b"]
    ollama_server.behaviour.mode = "hang"
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "mixed = "})
    assert (r.status_code, r.json()["error"]["type"]) == (503, "all_backends_failed")
    reasons = [b["reason"] for b in r.json()["error"]["backends"]]
    assert reasons[0] == "no first token within 0.3s" and reasons[1] != reasons[0]
