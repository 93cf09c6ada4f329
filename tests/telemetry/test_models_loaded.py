"""GET /api/models/loaded: what each configured Ollama holds in memory (its /api/ps)."""

from __future__ import annotations

import httpx
import orjson

from tests.api.conftest import Serve
from tests.servers.behaviour import beyond_probes
from tests.servers.harness import ServerHandle, free_port, run_in_thread
from tests.servers.ollama_server import EXPIRES_AT, OllamaApp
from tests.support.app_server import settings_for

HI = [{"role": "user", "content": "hi"}]


async def test_models_loaded_per_backend_and_a_backend_down(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with run_in_thread(OllamaApp()) as second:
        app = serve(settings_for(("first", "ollama", ollama_server.url),
                                 ("vllm", "openai", openai_server.url),  # not an Ollama
                                 ("second", "ollama", second.url),
                                 ("gone", "ollama", down)))
        r = await http.get(f"{app.url}/api/models/loaded")
        assert r.status_code == 200
        body = r.json()
        assert body["models"] == []
        assert [(b["name"], b["kind"], b["reachable"]) for b in body["backends"]] == [
            ("first", "ollama", True), ("second", "ollama", True), ("gone", "ollama", False)]
        assert body["backends"][2]["error"].startswith(f"cannot reach {down}: ")

        await http.post(f"{app.url}/api/ai/chat", json={"messages": HI})  # loads on first
        second.behaviour.loaded = ["test-embed", "test-model"]
        body = (await http.get(f"{app.url}/api/models/loaded")).json()

    assert body["models"] == [
        {"name": "test-model", "backend": "first", "size": 1_000_000, "size_vram": 1_000_000,
         "expires_at": EXPIRES_AT},
        {"name": "test-embed", "backend": "second", "size": 1_000_000, "size_vram": 1_000_000,
         "expires_at": EXPIRES_AT},
        {"name": "test-model", "backend": "second", "size": 1_000_000, "size_vram": 1_000_000,
         "expires_at": EXPIRES_AT},
    ]
    assert beyond_probes(openai_server.behaviour) == {}  # only Ollama backends are asked


async def test_partly_offloaded_model_and_a_failing_backend(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    with run_in_thread(OllamaApp()) as failing:
        failing.behaviour.mode = "fail"
        ollama_server.behaviour.canned["/api/ps"] = orjson.dumps({"models": [{
            "name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b", "size": 6_000_000_000,
            "size_vram": 4_500_000_000, "expires_at": "2026-01-02T03:04:05Z",
            "digest": "abc", "details": {}}]})
        app = serve(settings_for(("local", "ollama", ollama_server.url),
                                 ("broken", "ollama", failing.url)))
        r = await http.get(f"{app.url}/api/models/loaded")

    assert r.status_code == 200
    assert r.json() == {
        "models": [{"name": "qwen2.5-coder:7b", "backend": "local", "size": 6_000_000_000,
                    "size_vram": 4_500_000_000, "expires_at": "2026-01-02T03:04:05Z"}],
        "backends": [
            {"name": "local", "kind": "ollama", "reachable": True, "error": None},
            {"name": "broken", "kind": "ollama", "reachable": False,
             "error": "HTTP 500 Internal Server Error"},
        ],
    }
