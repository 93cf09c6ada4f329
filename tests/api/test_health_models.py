"""Health, readiness and the models overview."""

from __future__ import annotations

import httpx

from tests.api.conftest import Serve
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for


async def test_live_and_ready(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url),
                             ("vllm", "openai", openai_server.url)))
    assert (await http.get(f"{app.url}/health/live")).json() == {"status": "ok"}
    r = await http.get(f"{app.url}/health/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "checks": {
        "backend:ollama": {"status": "ok", "detail": None},
        "backend:vllm": {"status": "ok", "detail": None},
        "cache:memory": {"status": "ok", "detail": None},
    }}
    openai_server.stop()
    r = await http.get(f"{app.url}/health/ready")
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    assert r.json()["checks"]["backend:vllm"]["status"] == "down"
    ollama_server.stop()
    r = await http.get(f"{app.url}/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "down"
    assert "cannot reach" in r.json()["checks"]["backend:ollama"]["detail"]


async def test_models_available_lists_tasks_models_and_backend_health(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    models = (await http.get(f"{app.url}/api/models/available")).json()["models"]
    assert set(models) == {"completion", "chat", "embedding"}
    assert models["completion"]["model"] == "test-model"
    assert models["completion"]["family"] == "qwen2.5-coder"
    assert models["completion"]["use"] == "code completion (fill-in-the-middle)"
    assert models["embedding"]["model"] == "test-embed"
    assert models["chat"]["balance"] == "ordered"
    assert models["chat"]["backends"] == [{
        "name": "ollama", "kind": "ollama", "state": "closed", "healthy": True,
        "last_error": None, "cooldown_left_s": 0.0, "in_flight": 0, "share": 0.0,
    }]


async def test_breaker_opens_after_repeated_failures_and_shows_it(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url),
                             ("vllm", "openai", openai_server.url),
                             breaker={"failures": 2, "cooldown_s": 60}))
    ollama_server.behaviour.mode = "fail"
    for i in range(4):
        r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": f"{i}", "temperature": 1})
        assert r.json()["backend"] == "vllm"
    assert ollama_server.behaviour.requests["/api/generate"] == 2  # then it cooled down
    backend = (await http.get(f"{app.url}/api/models/available")).json()[
        "models"]["completion"]["backends"][0]
    assert backend["state"] == "open" and backend["healthy"] is False
    assert 0 < backend["cooldown_left_s"] <= 60


async def test_unknown_paths_and_methods_answer_in_our_error_shape(
    serve: Serve, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    r = await http.get(f"{app.url}/api/nothing-here")
    assert (r.status_code, r.json()) == (
        404, {"error": {"type": "not_found", "message": "Not Found"}})
    r = await http.put(f"{app.url}/api/ai/fim", json={})
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"
