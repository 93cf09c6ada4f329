"""Every field an agent sends is honoured (translated for the backend's kind), passed
through to a backend of its own protocol, or refused with a 4xx naming it and the backend:
never accepted and dropped."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest

from tests.agents.conftest import PARIS, WEATHER, Upstream, ollama_chat, openai_chat
from tests.api.conftest import Serve
from tests.compat.conftest import CHAT_MODEL, compat_settings
from tests.servers.behaviour import chat_prompt, default_reply
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer
from tests.support.images import png_b64, png_claiming

USER = {"role": "user", "content": "Describe it."}
PNG = png_b64()
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "degrees": {"type": "integer"}},
          "required": ["city", "degrees"], "additionalProperties": False}


# -- strict validation ----------------------------------------------------------------------

@pytest.mark.parametrize(("path", "status"), [
    ("/v1/chat/completions", 400), ("/api/chat", 400), ("/api/ai/chat", 422)])
@pytest.mark.parametrize(("field", "value", "named"), [
    ("tools", "not-a-list", "tools"),
    ("tools", [{"type": "function", "function": {"name": "x", "parameters": "no"}}],
     "parameters"),
    ("tools", [{"type": "function", "function": {"name": "x"}, "extra": 1}], "extra"),
    ("messages", [{"role": "user", "content": "hi", "colour": "red"}], "colour"),
])
async def test_malformed_agent_fields_are_refused_naming_them(
    path: str, status: int, field: str, value: Any, named: str,
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"model": CHAT_MODEL, "messages": [USER], field: value}
    response = await http.post(app.url + path, json=body)
    assert response.status_code == status, response.text
    assert named in response.text
    assert upstream.path not in upstream.server.behaviour.requests  # nothing went upstream


@pytest.mark.parametrize(("path", "status"), [("/api/chat", 400), ("/api/ai/chat", 422)])
async def test_keep_alive_is_a_short_duration(
    path: str, status: int, app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body: dict[str, Any] = {"messages": [USER], "keep_alive": "5" * 40}  # not 5.6e39 s
    if path == "/api/chat":
        body["model"] = CHAT_MODEL
    response = await http.post(app.url + path, json=body)
    assert response.status_code == status, response.text
    assert "keep_alive" in response.text and "at most 32 characters" in response.text
    assert upstream.path not in upstream.server.behaviour.requests


@pytest.mark.parametrize(("path", "status", "extra", "named"), [
    ("/v1/chat/completions", 400, {"top_k": False}, "top_k"),
    ("/v1/chat/completions", 400, {"max_tokens": True}, "max_tokens"),
    ("/api/chat", 400, {"options": {"num_ctx": True}}, "num_ctx"),
    ("/api/chat", 400, {"options": {"temperature": False}}, "temperature"),
    ("/api/chat", 400, {"keep_alive": True}, "keep_alive"),  # not 1 second
    ("/api/ai/chat", 422, {"top_p": False}, "top_p"),
])
async def test_true_and_false_are_not_numbers(
    path: str, status: int, extra: dict[str, Any], named: str,
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    # pydantic's lax mode would read them as 1 and 0; OpenAI and Ollama refuse them too.
    base: dict[str, Any] = {"messages": [USER]}
    if not path.startswith("/api/ai/"):
        base["model"] = CHAT_MODEL
    response = await http.post(app.url + path, json={**base, **extra})
    assert response.status_code == status, response.text
    assert named in response.text and "not true or false" in response.text
    assert upstream.path not in upstream.server.behaviour.requests
    # A whole number written as a float is still a number (JSON Schema's integer).
    whole = {"options": {"num_predict": 8.0}} if path == "/api/chat" else {"max_tokens": 8.0}
    answer = await http.post(app.url + path, json={**base, **whole})
    assert answer.status_code == 200, answer.text


async def test_our_api_refuses_unknown_top_level_fields(
    app: AppServer, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{app.url}/api/ai/chat",
                               json={"messages": [USER], "logit_bias": {"1": 2}})
    assert response.status_code == 422 and "logit_bias" in response.text


async def test_unknown_openai_fields_pass_to_an_openai_backend_or_are_refused(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"model": CHAT_MODEL, "messages": [USER], "user": "u-1",
            "logit_bias": {"42": -100}}
    response = await http.post(f"{app.url}/v1/chat/completions", json=body)
    if upstream.kind == "openai":
        assert response.status_code == 200, response.text
        sent = upstream.sent()
        assert sent["user"] == "u-1" and sent["logit_bias"] == {"42": -100}
    else:
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert "openai:logit_bias" in message and "openai:user" in message
        assert "'ollama' (ollama)" in message


async def test_ollama_options_and_memory_fields_reach_ollama_or_are_refused(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"model": CHAT_MODEL, "messages": [USER], "stream": False, "keep_alive": "1h",
            "options": {"num_ctx": 8192, "num_gpu": 12, "top_k": 20, "repeat_penalty": 1.1,
                        "top_p": 0.9, "min_p": 0.05}}
    response = await http.post(f"{app.url}/api/chat", json=body)
    if upstream.kind == "ollama":
        assert response.status_code == 200, response.text
        sent = upstream.sent()
        assert sent["keep_alive"] == "1h"
        assert {k: sent["options"][k] for k in body["options"]} == body["options"]
    else:
        assert response.status_code == 400
        message = response.json()["error"]
        for field in ("num_ctx", "keep_alive", "ollama:options.num_gpu"):
            assert field in message
        assert "'openai' (openai)" in message


async def test_sampling_fields_are_translated_for_each_kind(
    oai: openai.AsyncOpenAI, upstream: Upstream,
) -> None:
    await openai_chat(oai, False, messages=[USER], top_p=0.5, presence_penalty=0.25,
                      frequency_penalty=0.5, seed=7,
                      extra_body={"top_k": 20, "min_p": 0.1, "repetition_penalty": 1.2})
    sent = upstream.sent()
    fields = {"top_p": 0.5, "presence_penalty": 0.25, "frequency_penalty": 0.5, "seed": 7,
              "top_k": 20, "min_p": 0.1}
    if upstream.kind == "ollama":
        assert {k: sent["options"][k] for k in fields} == fields
        assert sent["options"]["repeat_penalty"] == 1.2
    else:
        assert {k: sent[k] for k in fields} == fields
        assert sent["repetition_penalty"] == sent["repeat_penalty"] == 1.2


async def test_a_field_one_candidate_cannot_honour_goes_to_the_next_that_can(
    serve: Serve, openai_server: ServerHandle, ollama_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(compat_settings(("vllm", "openai", openai_server.url),
                                ("ollama", "ollama", ollama_server.url)))
    body = {"model": CHAT_MODEL, "messages": [USER], "stream": False,
            "options": {"num_ctx": 4096}}
    response = await http.post(f"{app.url}/api/chat", json=body)
    assert response.status_code == 200, response.text
    assert ollama_server.behaviour.last_request["/api/chat"]["options"]["num_ctx"] == 4096
    assert "/v1/chat/completions" not in openai_server.behaviour.requests
    # ...and a plain request still goes to the first.
    del body["options"]
    assert (await http.post(f"{app.url}/api/chat", json=body)).status_code == 200
    assert openai_server.behaviour.requests["/v1/chat/completions"] == 1


@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "get_weather"}}])
async def test_a_forced_tool_choice_is_sent_or_refused(
    choice: Any, app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"model": CHAT_MODEL, "messages": [USER], "tools": [WEATHER], "tool_choice": choice}
    response = await http.post(f"{app.url}/v1/chat/completions", json=body)
    if upstream.kind == "openai":
        assert response.status_code == 200, response.text
        assert upstream.sent()["tool_choice"] == choice
    else:
        assert response.status_code == 400
        assert "tool_choice" in response.json()["error"]["message"]


async def test_tool_choice_none_sends_no_tools_to_ollama(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"model": CHAT_MODEL, "messages": [USER], "tools": [WEATHER], "tool_choice": "none"}
    response = await http.post(f"{app.url}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    sent = upstream.sent()
    if upstream.kind == "ollama":
        assert "tools" not in sent
    else:
        assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "none"


OSLO = {"name": "get_weather", "arguments": {"city": "Oslo"}}


async def test_ollama_call_index_and_type_travel_as_sent(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    calls = [{"type": "function", "function": {"index": 0, **PARIS}},
             {"function": {"index": 1, **OSLO}}]
    history = [USER, {"role": "assistant", "content": "", "tool_calls": calls},
               {"role": "tool", "content": "18", "tool_name": "get_weather"}]
    body = {"model": CHAT_MODEL, "messages": history, "tools": [WEATHER], "stream": False}
    response = await http.post(f"{app.url}/api/chat", json=body)
    assert response.status_code == 200, response.text
    sent = upstream.sent()["messages"][1]["tool_calls"]
    if upstream.kind == "ollama":  # Ollama's own form: index inside function, no type
        assert [c["function"] for c in sent] == [{"index": 0, **PARIS}, {"index": 1, **OSLO}]
        assert all(set(c) == {"id", "function"} for c in sent)
    else:  # OpenAI's: the order is the index; every call a function
        assert [(c["type"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                for c in sent] == [("function", "get_weather", {"city": "Paris"}),
                                   ("function", "get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_ollama_clients_get_each_call_with_its_index(
    stream: bool, app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    upstream.server.behaviour.tool_calls = (PARIS, OSLO)
    body = {"model": CHAT_MODEL, "messages": [USER], "tools": [WEATHER], "stream": stream}
    response = await http.post(f"{app.url}/api/chat", json=body)
    assert response.status_code == 200, response.text
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    calls = [c for line in lines for c in line.get("message", {}).get("tool_calls", ())]
    assert [c["function"] for c in calls] == [
        {"index": 0, **PARIS}, {"index": 1, **OSLO}]


# -- structured output ----------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_json_schema_from_the_openai_client_is_honoured(
    stream: bool, oai: openai.AsyncOpenAI, upstream: Upstream,
) -> None:
    fmt = {"type": "json_schema",
           "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
    reply = await openai_chat(oai, stream, messages=[USER], response_format=fmt)
    assert orjson.loads(reply.text) == {"city": "text", "degrees": 1}
    sent = upstream.sent()
    if upstream.kind == "ollama":
        assert sent["format"] == SCHEMA
    else:
        assert sent["response_format"] == fmt


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_ollama_format_json_and_schema_are_honoured(
    stream: bool, oll: ollama.AsyncClient, upstream: Upstream,
) -> None:
    reply = await ollama_chat(oll, stream, messages=[USER], format=SCHEMA)
    assert orjson.loads(reply.text) == {"city": "text", "degrees": 1}
    reply = await ollama_chat(oll, stream, messages=[USER], format="json")
    sent = upstream.sent()
    assert orjson.loads(reply.text) == {"reply": default_reply(chat_prompt(sent["messages"]))}
    if upstream.kind == "ollama":
        assert sent["format"] == "json"
    else:
        assert sent["response_format"] == {"type": "json_object"}


# -- images ---------------------------------------------------------------------------------

async def test_openai_image_parts_reach_either_kind(
    oai: openai.AsyncOpenAI, upstream: Upstream,
) -> None:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    await openai_chat(oai, False, messages=[{"role": "user", "content": content}])
    message = upstream.sent()["messages"][0]
    if upstream.kind == "ollama":
        assert message == {"role": "user", "content": "What is this?", "images": [PNG]}
    else:
        assert message == {"role": "user", "content": content}


async def test_ollama_images_reach_either_kind(
    oll: ollama.AsyncClient, upstream: Upstream,
) -> None:
    await ollama_chat(oll, False, messages=[
        {"role": "user", "content": "What is this?", "images": [base64.b64decode(PNG)]}])
    message = upstream.sent()["messages"][0]
    if upstream.kind == "ollama":
        assert message == {"role": "user", "content": "What is this?", "images": [PNG]}
    else:
        assert message == {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}


async def test_image_urls_go_only_where_they_can_be_fetched(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}]}
    response = await http.post(f"{app.url}/v1/chat/completions", json=body)
    if upstream.kind == "openai":
        assert response.status_code == 200, response.text
        assert upstream.sent()["messages"][0]["content"] == content
    else:
        assert response.status_code == 400
        assert "image URLs" in response.json()["error"]["message"]


@pytest.mark.parametrize(("image", "why"), [
    ("data:image/png;base64,@@@@", "base64"),
    ("ftp://example.com/a.png", "data: URL"),
])
async def test_bad_images_are_refused(
    image: str, why: str, app: AppServer, http: httpx.AsyncClient,
) -> None:
    content = [{"type": "image_url", "image_url": {"url": image}}]
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}]}
    response = await http.post(f"{app.url}/v1/chat/completions", json=body)
    assert response.status_code == 400 and why in response.text


HUGE = png_claiming(6000, 5000)  # 30 MP: over the pixel limit
BULKY = base64.b64encode(bytes(5 * 1024 * 1024 + 1)).decode()  # over the byte limit


def image_body(path: str, image: str, count: int = 1) -> dict[str, Any]:
    if path == "/api/chat":
        return {"model": CHAT_MODEL, "stream": False,
                "messages": [{"role": "user", "content": "x", "images": [image] * count}]}
    if path == "/api/ai/chat":
        return {"messages": [{"role": "user", "content": "x", "images": [image] * count}]}
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": [part] * count}]}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/api/ai/chat"])
@pytest.mark.parametrize(("image", "count", "status", "why"), [
    (HUGE, 1, 413, "6000x5000 pixels is over 25,000,000 pixels"),
    (BULKY, 1, 413, "over 5242880 bytes"),
    (base64.b64encode(b"plain text, no image").decode(), 1, 422, "not a PNG, JPEG"),
    (PNG, 17, 422, "17 images in one request; at most 16"),
], ids=["pixels", "bytes", "not-an-image", "count"])
async def test_image_limits_answer_clearly(
    path: str, image: str, count: int, status: int, why: str,
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    response = await http.post(app.url + path, json=image_body(path, image, count))
    # The compatible protocols answer every other bad request 400, as they define.
    expected = status if status == 413 or path == "/api/ai/chat" else 400
    assert response.status_code == expected, response.text
    assert why in response.text
    assert upstream.path not in upstream.server.behaviour.requests


@pytest.mark.parametrize("tokens", [[1, 2, 3], [[1, 2], [3]]])
async def test_embedding_token_ids_name_the_client_setting_to_change(
    tokens: Any, app: AppServer, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{app.url}/v1/embeddings",
                               json={"model": "nomic-embed-text", "input": tokens})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "check_embedding_ctx_length=False" in error["message"]
    assert error["param"] == "input"


async def test_participant_names_reach_an_openai_backend_or_are_refused(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"model": CHAT_MODEL, "messages": [{**USER, "name": "ada"}]}
    response = await http.post(f"{app.url}/v1/chat/completions", json=body)
    if upstream.kind == "openai":
        assert response.status_code == 200, response.text
        assert upstream.sent()["messages"] == [{**USER, "name": "ada"}]
    else:
        assert response.status_code == 400
        assert "message names" in response.json()["error"]["message"]
