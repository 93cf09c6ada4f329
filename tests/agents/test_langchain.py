"""LangChain end to end: `bind_tools` gives `tool_calls`, `with_structured_output` a parsed
object, through ChatOpenAI (/v1) and ChatOllama (/api), to either backend kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.agents.conftest import PARIS, Upstream
from tests.compat.conftest import CHAT_MODEL
from tests.support.app_server import AppServer


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Weather(BaseModel):
    """The weather somewhere."""

    city: str
    degrees: int


@asynccontextmanager
async def chat_model(protocol: str, app: AppServer) -> AsyncIterator[Any]:
    """The LangChain chat model of `protocol`, its connections closed afterwards."""
    if protocol == "openai":
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            yield ChatOpenAI(model=CHAT_MODEL, base_url=f"{app.url}/v1", api_key="unused",
                             max_retries=0, temperature=0, http_async_client=http)
        return
    llm = ChatOllama(model=CHAT_MODEL, base_url=app.url, temperature=0,
                     client_kwargs={"trust_env": False, "timeout": 10})
    try:
        yield llm
    finally:
        await llm._async_client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "astream"])
@pytest.mark.parametrize("protocol", ["openai", "ollama"])
async def test_bind_tools_returns_tool_calls(
    protocol: str, stream: bool, app: AppServer, upstream: Upstream
) -> None:
    upstream.server.behaviour.tool_calls = (PARIS,)
    async with chat_model(protocol, app) as model:
        llm = model.bind_tools([get_weather])
        if stream:
            message: Any = None
            async for chunk in llm.astream("Weather in Paris?"):
                assert isinstance(chunk, AIMessageChunk)
                message = chunk if message is None else message + chunk
        else:
            message = await llm.ainvoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert message.tool_calls[0]["id"]
    sent_tools = upstream.sent()["tools"]
    assert [t["function"]["name"] for t in sent_tools] == ["get_weather"]
    assert sent_tools[0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
async def test_with_structured_output_returns_a_parsed_object(
    protocol: str, app: AppServer, upstream: Upstream
) -> None:
    async with chat_model(protocol, app) as model:
        llm = model.with_structured_output(Weather, method="json_schema")
        parsed = await llm.ainvoke("Weather in Paris?")
    assert parsed == Weather(city="text", degrees=1)  # the schema's instance, parsed
    sent = upstream.sent()
    schema = sent["format"] if upstream.kind == "ollama" \
        else sent["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["city", "degrees"]
