"""The cache keys a chat by everything that changes its answer, and a cached tool-call
answer replays as tool calls, streamed and whole."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.agents.conftest import PARIS, WEATHER, Upstream, openai_chat
from tests.support.images import png_b64

USER = {"role": "user", "content": "Weather in Paris?"}
PNG = png_b64()
WITH_IMAGE = {"role": "user", "content": [
    {"type": "text", "text": "Weather in Paris?"},
    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}


def schema(field: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": {
        "type": "object", "properties": {field: {"type": "string"}}, "required": [field]}}}


VARIANTS: dict[str, list[dict[str, Any]]] = {
    "tools": [{}, {"tools": [WEATHER]}],
    "schemas": [{"response_format": schema("a")}, {"response_format": schema("b")}],
    "images": [{}, {"messages": [WITH_IMAGE]}],
    "sampling": [{}, {"top_p": 0.5}],
    "tool choice": [{"tools": [WEATHER]}, {"tools": [WEATHER], "tool_choice": "none"}],
}


@pytest.mark.parametrize("name", list(VARIANTS))
async def test_requests_that_differ_never_share_an_entry(
    name: str, oai: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    behaviour = upstream.server.behaviour
    requests = behaviour.requests
    first, second = ({"messages": [USER], **v} for v in VARIANTS[name])
    behaviour.reply = "first"
    a = await openai_chat(oai, False, **first)
    behaviour.reply = "second"
    b = await openai_chat(oai, False, **second)
    assert requests[upstream.path] == 2  # the second was not served from the first's entry
    if name != "schemas":  # (the server answers a schema with an instance of it)
        assert (a.text, b.text) == ("first", "second")
    else:
        assert (a.text, b.text) == ('{"a":"text"}', '{"b":"text"}')
    assert await openai_chat(oai, False, **second) == b  # each is cached on its own
    assert await openai_chat(oai, False, **first) == a
    assert requests[upstream.path] == 2


@pytest.mark.parametrize("second_stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("first_stream", [False, True], ids=["whole", "streamed"])
async def test_a_cached_tool_call_replays_as_tool_calls(
    first_stream: bool, second_stream: bool, oai: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    upstream.server.behaviour.tool_calls = (PARIS,)
    first = await openai_chat(oai, first_stream, messages=[USER], tools=[WEATHER])
    again = await openai_chat(oai, second_stream, messages=[USER], tools=[WEATHER])
    assert upstream.server.behaviour.requests[upstream.path] == 1
    assert again == first  # the same call, id included, and finish "tool_calls"
    assert again.finish == "tool_calls" and again.calls[0][1:] == ("get_weather",
                                                                   {"city": "Paris"})
