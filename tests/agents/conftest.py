"""Mimiverse in front of one loopback backend of each kind (parametrised), and clients of
each protocol that reduce an answer, streamed or whole, to one comparable shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest

from tests.api.conftest import Serve, serve
from tests.compat.conftest import CHAT_MODEL, Upstream, http, oai, oll, pick_upstream
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer

__all__ = ["Upstream", "http", "oai", "oll", "serve"]  # the clients of every protocol, as in compat

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
PARIS = {"name": "get_weather", "arguments": {"city": "Paris"}}
CHAT_PATH = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}


@pytest.fixture(params=["ollama", "openai"])
def upstream(request: pytest.FixtureRequest, ollama_server: ServerHandle,
             openai_server: ServerHandle) -> Upstream:
    return pick_upstream(request, ollama_server, openai_server, CHAT_PATH)


@pytest.fixture
def app(serve: Serve, upstream: Upstream) -> AppServer:
    return serve(upstream.settings())


@dataclass
class Reply:
    """An answer in any protocol, reduced: text, reasoning, calls (id, name, arguments
    as an object), finish."""

    text: str = ""
    reasoning: str = ""
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    finish: str | None = None


async def openai_chat(client: openai.AsyncOpenAI, stream: bool, **kwargs: Any) -> Reply:
    """A chat through the official openai client; streamed pieces joined as a client does."""
    kwargs.setdefault("model", CHAT_MODEL)
    if not stream:
        done = await client.chat.completions.create(**kwargs)
        message = done.choices[0].message
        calls = [(c.id, c.function.name, orjson.loads(c.function.arguments))
                 for c in message.tool_calls or () if c.type == "function"]
        reasoning = (message.model_extra or {}).get("reasoning_content") or ""
        return Reply(message.content or "", reasoning, calls, done.choices[0].finish_reason)
    reply = Reply()
    pieces: dict[int, list[str]] = {}
    async for chunk in await client.chat.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        reply.text += choice.delta.content or ""
        reply.reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
        for piece in choice.delta.tool_calls or ():
            call = pieces.setdefault(piece.index, ["", "", ""])
            if piece.id:
                assert not call[0], "a call's id comes once, on its first piece"
                call[0] = piece.id
            if piece.function and piece.function.name:
                call[1] = piece.function.name
            call[2] += (piece.function.arguments or "") if piece.function else ""
        reply.finish = choice.finish_reason or reply.finish
    reply.calls = [(i, n, orjson.loads(a)) for i, n, a in (pieces[k] for k in sorted(pieces))]
    return reply


async def ollama_chat(client: ollama.AsyncClient, stream: bool, **kwargs: Any) -> Reply:
    kwargs.setdefault("model", CHAT_MODEL)
    responses = [await client.chat(**kwargs)] if not stream else \
        [part async for part in await client.chat(stream=True, **kwargs)]
    reply = Reply()
    for part in responses:
        reply.text += part.message.content or ""
        reply.reasoning += part.message.thinking or ""
        reply.calls += [("", c.function.name, dict(c.function.arguments))
                        for c in part.message.tool_calls or ()]
        reply.finish = part.done_reason or reply.finish
    return reply


async def ai_chat(http: httpx.AsyncClient, app: AppServer, stream: bool,
                  body: dict[str, Any]) -> Reply:
    """Our /api/ai/chat, whole or as server-sent events."""
    response = await http.post(f"{app.url}/api/ai/chat", json={**body, "stream": stream})
    assert response.status_code == 200, response.text
    if not stream:
        answer = response.json()
        message = answer["message"]
        return Reply(message["content"], message["reasoning"],
                     [(c["id"], c["name"], orjson.loads(c["arguments"]))
                      for c in message["tool_calls"]], answer["finish_reason"])
    reply = Reply()
    pieces: dict[int, list[str]] = {}
    for block in response.text.strip().split("\n\n"):
        kind, data = (line.split(": ", 1)[1] for line in block.split("\n"))
        event = orjson.loads(data)
        if kind == "done":
            reply.finish = event["finish_reason"]
            continue
        assert kind == "delta", data
        reply.text += event["text"]
        reply.reasoning += event.get("reasoning", "")
        for piece in event.get("tool_calls", ()):
            call = pieces.setdefault(piece["index"], ["", "", ""])
            call[0] = piece["id"] or call[0]
            call[1] = piece["name"] or call[1]
            call[2] += piece["arguments"]
    reply.calls = [(i, n, orjson.loads(a)) for i, n, a in (pieces[k] for k in sorted(pieces))]
    return reply
