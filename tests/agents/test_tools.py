"""Tools through every pair of client protocol (openai client, ollama client, our
/api/ai/chat) and backend kind (Ollama, OpenAI-compatible), streamed and whole: what the
backend receives, what the client gets back, and a whole agent round trip."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest

from tests.agents.conftest import (
    PARIS,
    WEATHER,
    Reply,
    Upstream,
    ai_chat,
    ollama_chat,
    openai_chat,
)
from tests.servers.behaviour import chat_prompt, default_reply
from tests.support.app_server import AppServer

USER = {"role": "user", "content": "Weather in Paris?"}
TOOL_RESULT = "18 degrees, sunny"

CLIENTS = ["openai", "ollama", "ai"]


async def ask(client: str, stream: bool, oai: openai.AsyncOpenAI, oll: ollama.AsyncClient,
              http: httpx.AsyncClient, app: AppServer, **body: Any) -> Reply:
    if client == "openai":
        return await openai_chat(oai, stream, **body)
    if client == "ollama":
        return await ollama_chat(oll, stream, **body)
    return await ai_chat(http, app, stream, body)


def forwarded_tools(upstream: Upstream) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = upstream.sent()["tools"]
    return tools


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_a_tool_call_comes_back_in_the_clients_own_shape(
    client: str, stream: bool, upstream: Upstream, app: AppServer,
    oai: openai.AsyncOpenAI, oll: ollama.AsyncClient, http: httpx.AsyncClient,
) -> None:
    upstream.server.behaviour.tool_calls = (PARIS,)
    reply = await ask(client, stream, oai, oll, http, app, messages=[USER], tools=[WEATHER])

    assert forwarded_tools(upstream) == [WEATHER]  # translated whole, in both kinds
    assert [(name, args) for _, name, args in reply.calls] == [("get_weather",
                                                                 {"city": "Paris"})]
    assert reply.text == ""
    if client == "ollama":
        assert reply.finish == "stop"  # Ollama reports tool calls with "stop"
    else:
        assert reply.finish == "tool_calls"
        ident = reply.calls[0][0]
        # OpenAI backends give ids; for Ollama's id-less calls the gateway makes one.
        assert ident.startswith("call_") and len(ident) > 8


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_an_agent_round_trip_carries_the_call_and_its_result(
    client: str, stream: bool, upstream: Upstream, app: AppServer,
    oai: openai.AsyncOpenAI, oll: ollama.AsyncClient, http: httpx.AsyncClient,
) -> None:
    behaviour = upstream.server.behaviour
    behaviour.tool_calls = (PARIS,)
    first = await ask(client, stream, oai, oll, http, app, messages=[USER], tools=[WEATHER])
    ident, name, args = first.calls[0]

    behaviour.tool_calls = ()
    if client == "ollama":  # Ollama's history: calls without ids, results by name
        history = [USER, {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": name, "arguments": args}}]},
            {"role": "tool", "content": TOOL_RESULT, "tool_name": name}]
    elif client == "openai":
        history = [USER, {"role": "assistant", "content": None, "tool_calls": [
            {"id": ident, "type": "function",
             "function": {"name": name, "arguments": orjson.dumps(args).decode()}}]},
            {"role": "tool", "content": TOOL_RESULT, "tool_call_id": ident}]
    else:
        history = [USER, {"role": "assistant", "content": "", "tool_calls": [
            {"id": ident, "name": name, "arguments": args}]},
            {"role": "tool", "content": TOOL_RESULT, "tool_call_id": ident}]
    second = await ask(client, stream, oai, oll, http, app, messages=history, tools=[WEATHER])

    sent = upstream.sent()["messages"]
    assert second.calls == [] and second.finish == "stop"
    assert second.text == default_reply(chat_prompt(sent))
    call, result = sent[1], sent[2]
    if upstream.kind == "ollama":
        assert call["tool_calls"][0]["function"] == {"name": "get_weather",
                                                     "arguments": {"city": "Paris"}}
        assert result == {"role": "tool", "content": TOOL_RESULT, "tool_name": "get_weather"}
    else:
        piece = call["tool_calls"][0]
        assert piece["type"] == "function" and piece["function"]["name"] == "get_weather"
        assert orjson.loads(piece["function"]["arguments"]) == {"city": "Paris"}
        # The result answers the call by the same id, made up when the client gave none.
        assert result == {"role": "tool", "content": TOOL_RESULT,
                          "tool_call_id": piece["id"]}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_openai_ids_missing_upstream_are_made_once_per_call(
    stream: bool, upstream: Upstream, oai: openai.AsyncOpenAI
) -> None:
    behaviour = upstream.server.behaviour
    behaviour.call_ids = False
    behaviour.tool_calls = (PARIS, {"name": "get_weather", "arguments": {"city": "Oslo"}})
    reply = await openai_chat(oai, stream, messages=[USER], tools=[WEATHER])
    assert [args for _, _, args in reply.calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    ids = [ident for ident, _, _ in reply.calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_reasoning_travels_as_each_protocol_spells_it(
    client: str, stream: bool, upstream: Upstream, app: AppServer,
    oai: openai.AsyncOpenAI, oll: ollama.AsyncClient, http: httpx.AsyncClient,
) -> None:
    upstream.server.behaviour.reasoning = "Paris is in France, so..."
    think: dict[str, Any] = {"reasoning_effort": "high"} if client == "openai" \
        else {"think": "high"}
    reply = await ask(client, stream, oai, oll, http, app, messages=[USER], **think)

    assert reply.reasoning == "Paris is in France, so..."
    assert reply.text == default_reply(chat_prompt(upstream.sent()["messages"]))
    sent = upstream.sent()
    if upstream.kind == "ollama":
        assert sent["think"] == "high"
    else:
        assert sent["reasoning_effort"] == "high"
