"""Each model's capabilities: configured, else asked of its backend (Ollama's /api/show, a
GGUF's chat template); reported by /api/show, /v1/models and /api/models/available, and
a request that needs one the model lacks is refused naming it."""

from __future__ import annotations

import httpx
import pytest

from mimiverse.backends.llamacpp_chat import template_capabilities
from tests.agents.conftest import WEATHER
from tests.api.conftest import Serve
from tests.compat.conftest import CHAT_MODEL, COMPLETION_MODEL, compat_settings
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer

USER = {"role": "user", "content": "Weather in Paris?"}


async def reports(http: httpx.AsyncClient, app: AppServer, model: str) -> dict[str, list[str]]:
    show = (await http.post(f"{app.url}/api/show", json={"model": model})).json()
    listed = {m["id"]: m for m in (await http.get(f"{app.url}/v1/models")).json()["data"]}
    one = (await http.get(f"{app.url}/v1/models/{model}")).json()
    available = (await http.get(f"{app.url}/api/models/available")).json()["models"]
    task = "chat" if model == CHAT_MODEL else "completion"
    return {"show": show["capabilities"], "models": listed[model]["capabilities"],
            "model": one["capabilities"], "available": available[task]["capabilities"]}


async def test_ollama_says_what_the_model_can_do(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    behaviour = ollama_server.behaviour
    behaviour.models = (CHAT_MODEL, COMPLETION_MODEL)
    behaviour.capabilities = ("completion", "tools", "vision", "thinking")
    app = serve(compat_settings(("ollama", "ollama", ollama_server.url)))
    for value in (await reports(http, app, CHAT_MODEL)).values():
        assert value == ["completion", "tools", "vision", "thinking"]


async def test_the_settings_say_it_over_the_backend(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    settings = compat_settings(("ollama", "ollama", ollama_server.url))
    settings.models.chat.capabilities = ["completion", "vision"]
    app = serve(settings)
    for value in (await reports(http, app, CHAT_MODEL)).values():
        assert value == ["completion", "vision"]
    completion = await reports(http, app, COMPLETION_MODEL)
    assert completion["show"][:2] == ["completion", "insert"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_the_model_cannot_serve_is_refused_naming_why(
    stream: bool, serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    behaviour = ollama_server.behaviour
    behaviour.models = (CHAT_MODEL,)
    behaviour.capabilities = ("completion",)
    app = serve(compat_settings(("ollama", "ollama", ollama_server.url)))
    body = {"model": CHAT_MODEL, "messages": [USER], "tools": [WEATHER], "stream": stream}
    response = await http.post(f"{app.url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "cannot use tools" in message and CHAT_MODEL in message
    assert "/api/chat" not in behaviour.requests
    # What it can do still works, and thinking off needs no thinking.
    del body["tools"]
    body["reasoning_effort"] = "none"
    assert (await http.post(f"{app.url}/v1/chat/completions", json=body)).status_code == 200


async def test_unknown_capabilities_report_what_the_backend_carries(
    serve: Serve, openai_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(compat_settings(("vllm", "openai", openai_server.url)))
    got = await reports(http, app, CHAT_MODEL)
    assert all(v == ["completion", "tools"] for v in got.values())


def test_a_chat_template_shows_tools_and_thinking() -> None:
    assert template_capabilities("{{ messages }}") == ("completion",)
    assert template_capabilities("{% if tools %}{{ tools | tojson }}{% endif %}") == (
        "completion", "tools")
    assert template_capabilities("{% if enable_thinking %}<think>{% endif %}") == (
        "completion", "thinking")
