"""The embedded llama.cpp runs an agent: forced tool calls and structured output through
grammars, free tool calls in the `<tool_call>` form, on the tests' tiny GGUF (random
weights: answers are asserted by structure), and end to end through the openai client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import openai
import orjson
import pytest

from mimiverse.backends.base import (
    ChatMessage,
    ChatRequest,
    Delta,
    ResponseFormat,
    Tool,
)
from mimiverse.backends.llamacpp_chat import CallWatch, parse_calls, template_messages
from mimiverse.config import load_settings
from tests.api.conftest import Serve, serve
from tests.llamacpp.conftest import llamacpp_settings
from tests.support.tiny_gguf import TinyModelInfo

if TYPE_CHECKING:
    from mimiverse.backends.llamacpp import LlamaCppBackend

__all__ = ["serve"]

# Enumerations only: a random model under a grammar can still only write finite JSON.
UNIT = {"type": "object", "properties": {"unit": {"enum": ["celsius", "kelvin"]}},
        "required": ["unit"], "additionalProperties": False}
CITY = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}},
        "required": ["city"], "additionalProperties": False}
TOOLS = (Tool("get_unit", "The unit to use", UNIT), Tool("get_weather", "Weather", CITY))
USER = (ChatMessage("user", "Weather in Paris?"),)


async def run(backend: LlamaCppBackend, **fields: Any) -> list[Delta]:
    fields.setdefault("max_tokens", 128)  # the tiny vocabulary spells JSON mostly by bytes
    request = ChatRequest("tiny", USER, **fields)
    return [d async for d in backend.stream_chat(request)]


def call_of(deltas: list[Delta]) -> tuple[str, dict[str, Any]]:
    (last,) = [d for d in deltas if d.tool_calls]
    assert last is deltas[-1] and last.finish_reason == "tool_calls"
    (piece,) = last.tool_calls
    assert piece.index == 0 and piece.id and piece.id.startswith("call_")
    assert piece.name is not None
    assert "".join(d.text for d in deltas) == ""  # the call is not also sent as text
    return piece.name, orjson.loads(piece.arguments)


async def test_a_named_function_is_called_with_arguments_of_its_schema(
    backend: LlamaCppBackend,
) -> None:
    deltas = await run(backend, tools=TOOLS, tool_choice="function",
                       tool_choice_name="get_weather")
    name, arguments = call_of(deltas)
    assert name == "get_weather" and arguments["city"] in ("Paris", "Oslo")
    assert list(arguments) == ["city"]


async def test_required_calls_one_of_the_tools(backend: LlamaCppBackend) -> None:
    name, arguments = call_of(await run(backend, tools=TOOLS, tool_choice="required"))
    schema = {t.name: t.parameters for t in TOOLS}[name]
    (field,) = schema["required"]
    assert list(arguments) == [field]
    assert arguments[field] in schema["properties"][field]["enum"]


@pytest.mark.parametrize("fmt", [ResponseFormat("json_schema", UNIT),
                                 ResponseFormat("json_object")])
async def test_structured_output_is_json_of_the_schema(
    backend: LlamaCppBackend, fmt: ResponseFormat
) -> None:
    deltas = await run(backend, response_format=fmt, max_tokens=64 if fmt.schema else 8)
    text = "".join(d.text for d in deltas)
    if fmt.schema is not None:
        assert orjson.loads(text)["unit"] in ("celsius", "kelvin")
    else:  # any JSON, possibly cut at max_tokens: it opens as JSON does
        assert text.lstrip()[:1] in ("{", "[", '"', "-", "t", "f", "n") or \
            text.lstrip()[:1].isdigit()


async def test_auto_lets_the_model_answer_in_text(backend: LlamaCppBackend) -> None:
    deltas = await run(backend, tools=TOOLS, max_tokens=8)
    assert not any(d.tool_calls for d in deltas)
    assert "".join(d.text for d in deltas) and deltas[-1].finish_reason == "length"


def test_an_assistant_turns_thinking_reaches_the_chat_template() -> None:
    """Sent back by the client, it is the template's to keep or drop, never ours to lose."""
    turns = (ChatMessage("user", "hi"), ChatMessage("assistant", "hello", reasoning="greet"))
    assert template_messages(turns) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "reasoning_content": "greet"},
    ]


def test_a_tool_call_block_is_held_back_and_parsed() -> None:
    watch = CallWatch()
    out = [watch.feed(t) for t in ("\n<tool", "_call>\n{\"name\": \"get_weather\", ",
                                   "\"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>")]
    assert out == ["", "", ""]
    rest, calls = watch.finish()
    assert rest == "" and [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city":"Oslo"}')]


def test_text_that_only_looks_like_a_call_at_first_streams_as_text() -> None:
    watch = CallWatch()
    assert watch.feed("<to") == ""
    assert watch.feed("day>") == "<today>"
    assert watch.feed(" more") == " more"
    assert watch.finish() == ("", ())


def test_a_broken_call_block_comes_back_as_text() -> None:
    watch = CallWatch()
    watch.feed("<tool_call>{not json</tool_call>")
    assert watch.finish() == ("<tool_call>{not json</tool_call>", ())
    assert parse_calls('<tool_call>{"arguments": {}}</tool_call>') == ()


@pytest.fixture
async def client(serve: Serve, tiny_gguf: TinyModelInfo) -> AsyncIterator[openai.AsyncOpenAI]:
    backend = llamacpp_settings(tiny_gguf.path)
    settings = load_settings(None, backends=[backend.model_dump()], models={
        "completion": {"model": "tiny", "family": "qwen2.5-coder", "backends": ["tiny"]},
        # The tiny model's template renders no tools: say what it is used for here.
        "chat": {"model": "tiny", "backends": ["tiny"], "max_tokens": 128,
                 "capabilities": ["completion", "tools"]},
        "embedding": {"model": "tiny", "backends": ["tiny"]}})
    app = serve(settings)
    async with openai.AsyncOpenAI(
        base_url=f"{app.url}/v1", api_key="unused", max_retries=0,
        http_client=httpx.AsyncClient(trust_env=False, timeout=60)) as oai:
        yield oai


async def test_an_agent_round_trip_on_the_embedded_model(client: openai.AsyncOpenAI) -> None:
    tools: Any = [{"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in TOOLS]
    messages: Any = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.chat.completions.create(
        model="tiny", messages=messages, tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or ()
    assert call.type == "function" and call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments)["city"] in ("Paris", "Oslo")

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"}]
    stream = await client.chat.completions.create(model="tiny", messages=messages,
                                                  tools=tools, stream=True, max_tokens=6)
    text = ""
    async for chunk in stream:
        if chunk.choices:
            assert not chunk.choices[0].delta.tool_calls
            text += chunk.choices[0].delta.content or ""
    assert text  # the model answers in words after the tool's result
