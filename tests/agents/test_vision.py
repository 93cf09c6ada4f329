"""Images go to a model that can see: the chat model when it can, else [models.vision];
POST /api/ai/ui-to-code turns a picture of an interface into code, streamed."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from mimiverse.config import Settings
from tests.api.conftest import Serve
from tests.compat.conftest import CHAT_MODEL, compat_settings
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer
from tests.support.images import png_b64, png_claiming

VISION_MODEL = "qwen2.5vl:7b"
PNG = png_b64()
LOOK = {"role": "user", "content": [
    {"type": "text", "text": "What is this?"},
    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}


def with_vision(ollama_url: str, openai_url: str, **chat: Any) -> Settings:
    """Chat on the loopback Ollama, vision on the loopback OpenAI server."""
    settings = compat_settings(("ollama", "ollama", ollama_url), ("vl", "openai", openai_url))
    settings.models.chat.backends = ["ollama"]
    for name, value in chat.items():
        setattr(settings.models.chat, name, value)
    return Settings.model_validate({**settings.model_dump(), "models": {
        **settings.models.model_dump(),
        "vision": {"model": VISION_MODEL, "backends": ["vl"]}}})


async def post_chat(http: httpx.AsyncClient, app: AppServer,
                    messages: list[dict[str, Any]]) -> httpx.Response:
    return await http.post(f"{app.url}/v1/chat/completions",
                           json={"model": CHAT_MODEL, "messages": messages})


async def test_images_go_to_the_vision_model_when_the_chat_model_cannot_see(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    ollama_server.behaviour.models = (CHAT_MODEL,)
    ollama_server.behaviour.capabilities = ("completion", "tools")
    app = serve(with_vision(ollama_server.url, openai_server.url))
    response = await post_chat(http, app, [LOOK])
    assert response.status_code == 200, response.text
    assert response.json()["model"] == VISION_MODEL
    sent = openai_server.behaviour.last_request["/v1/chat/completions"]
    assert sent["model"] == VISION_MODEL and sent["messages"] == [LOOK]
    assert "/api/chat" not in ollama_server.behaviour.requests
    # Streamed, every chunk names the model that answers.
    async with http.stream("POST", f"{app.url}/v1/chat/completions", json={
            "model": CHAT_MODEL, "messages": [LOOK], "stream": True}) as streamed:
        chunks = [orjson.loads(line[6:]) async for line in streamed.aiter_lines()
                  if line.startswith("data: {")]
    assert chunks and {c["model"] for c in chunks} == {VISION_MODEL}
    lines = (await http.post(f"{app.url}/api/chat", json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "x",
                                           "images": [PNG]}]})).text.splitlines()
    assert {orjson.loads(line)["model"] for line in lines} == {VISION_MODEL}
    # Words only: the chat model.
    response = await post_chat(http, app, [{"role": "user", "content": "hi"}])
    assert response.json()["model"] == CHAT_MODEL
    assert ollama_server.behaviour.requests["/api/chat"] == 1


async def test_a_chat_model_that_sees_keeps_its_images(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(with_vision(ollama_server.url, openai_server.url,
                            capabilities=["completion", "vision"]))
    response = await post_chat(http, app, [LOOK])
    assert response.status_code == 200 and response.json()["model"] == CHAT_MODEL
    sent = ollama_server.behaviour.last_request["/api/chat"]["messages"][0]
    assert sent["images"] == [PNG]
    assert "/v1/chat/completions" not in openai_server.behaviour.requests


async def test_images_for_a_model_known_blind_and_no_vision_model_are_refused(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient,
) -> None:
    settings = compat_settings(("ollama", "ollama", ollama_server.url))
    settings.models.chat.capabilities = ["completion", "tools"]
    app = serve(settings)
    response = await post_chat(http, app, [LOOK])
    assert response.status_code == 400
    assert "cannot use vision" in response.json()["error"]["message"]


@pytest.fixture
def vision_app(serve: Serve, ollama_server: ServerHandle,
               openai_server: ServerHandle) -> AppServer:
    openai_server.behaviour.reply = "<main><h1>Hello</h1></main>"
    return serve(with_vision(ollama_server.url, openai_server.url))


@pytest.mark.parametrize("target", ["html", "react", "vue"])
async def test_ui_to_code_streams_the_code(
    target: str, vision_app: AppServer, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    body = {"image": PNG, "instruction": "A landing page header", "target": target}
    response = await http.post(f"{vision_app.url}/api/ai/ui-to-code", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n") for block in response.text.strip().split("\n\n")]
    kinds = [e[0].removeprefix("event: ") for e in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"}
    code = "".join(orjson.loads(e[1].removeprefix("data: "))["text"] for e in events[:-1])
    assert code == "<main><h1>Hello</h1></main>"
    system, user = openai_server.behaviour.last_request["/v1/chat/completions"]["messages"]
    assert system["role"] == "system" and {"html": "HTML", "react": "React",
                                           "vue": "Vue"}[target] in system["content"]
    assert user["content"] == [
        {"type": "text", "text": "A landing page header"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]


async def test_ui_to_code_answers_whole_when_asked(
    vision_app: AppServer, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{vision_app.url}/api/ai/ui-to-code",
                               json={"image": f"data:image/png;base64,{PNG}",
                                     "stream": False})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["code"], answer["target"], answer["model"]) == (
        "<main><h1>Hello</h1></main>", "html", VISION_MODEL)


@pytest.mark.parametrize(("body", "status", "why"), [
    ({"image": PNG, "target": "cobol"}, 422, "target"),
    ({"image": PNG, "colour": "red"}, 422, "colour"),
    ({"image": png_claiming(8000, 4000)}, 413, "8000x4000 pixels"),
    ({"image": "aGVsbG8="}, 422, "not a PNG"),
    ({"instruction": "no image"}, 422, "image"),
])
async def test_ui_to_code_refuses_clearly(
    body: dict[str, Any], status: int, why: str, vision_app: AppServer,
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(f"{vision_app.url}/api/ai/ui-to-code", json=body)
    assert response.status_code == status, response.text
    assert why in response.text
