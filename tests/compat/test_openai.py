"""The OpenAI API with the official `openai` client against Mimiverse on loopback."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest

from tests.compat.conftest import CHAT_MODEL, COMPLETION_MODEL, EMBEDDING_MODEL, QWEN
from tests.servers.behaviour import chat_prompt, default_reply, embed_vector, split_tokens
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer


async def test_completion_with_suffix_is_fim_through_our_template(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "a + b"
    result = await oai.completions.create(model="completion", prompt="def add(a, b):\n    return ",
                                          suffix="\n", max_tokens=20, stop=["\n\n"])
    prompt = QWEN.format("def add(a, b):\n    return ", "\n")
    sent = ollama_server.behaviour.last_request["/api/generate"]
    assert sent["prompt"] == prompt and sent["raw"] is True
    assert sent["options"]["num_predict"] == 20 and "\n\n" in sent["options"]["stop"]
    assert result.id.startswith("cmpl-") and len(result.id) > len("cmpl-")
    assert result.object == "text_completion"
    assert result.model == COMPLETION_MODEL
    assert isinstance(result.created, int) and result.created > 1_700_000_000
    assert len(result.choices) == 1
    choice = result.choices[0]
    assert (choice.index, choice.text, choice.finish_reason, choice.logprobs) == (
        0, "a + b", "stop", None)
    assert result.usage is not None
    # The test Ollama reports its own counts: they are passed through.
    assert result.usage.prompt_tokens == len(split_tokens(prompt))
    assert result.usage.completion_tokens == len(split_tokens("a + b"))
    assert result.usage.total_tokens == result.usage.prompt_tokens + 3


async def test_prompt_without_suffix_is_fim_with_empty_suffix(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    result = await oai.completions.create(model=COMPLETION_MODEL, prompt=["x = "])
    prompt = QWEN.format("x = ", "")
    assert ollama_server.behaviour.last_request["/api/generate"]["prompt"] == prompt
    assert result.choices[0].text == default_reply(prompt)


async def test_streamed_completion_ends_with_finish_reason_usage_and_done(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "total = a + b"
    stream = await oai.completions.create(model="completion", prompt="    ", suffix="",
                                          stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("cmpl-")
    assert all(c.object == "text_completion" and c.model == COMPLETION_MODEL for c in chunks)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == "total = a + b" and len(texts) > 2
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(split_tokens("total = a + b"))


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize(("options", "named"), [
    ({"include_usage": True, "include_obfuscation": True},
     "stream_options.include_obfuscation: only include_obfuscation=false"),
    ({"include_usage": True, "chunk_size": 4}, "stream_options.chunk_size"),
])
async def test_stream_options_we_cannot_honour_are_refused_naming_them(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle, endpoint: str,
    options: dict[str, object], named: str,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        if endpoint == "chat":
            await oai.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "x"}], stream=True,
                stream_options=options)  # type: ignore[arg-type]
        else:
            await oai.completions.create(model="completion", prompt="x", stream=True,
                                         stream_options=options)  # type: ignore[arg-type]
    assert named in info.value.body["message"]  # type: ignore[index]
    assert not {"/api/chat", "/api/generate"} & set(ollama_server.behaviour.requests)


async def test_no_obfuscation_padding_is_what_include_obfuscation_false_asks(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "ok then"
    stream = await oai.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}], stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ok then"
    assert chunks[-1].usage is not None
    assert not any("obfuscation" in (c.model_extra or {}) for c in chunks)


async def test_stream_body_is_sse_ending_with_done(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "ok"
    r = await http.post(f"{app.url}/v1/completions",
                        json={"model": "completion", "prompt": "a", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    assert all(block.startswith("data: ") for block in r.text.strip().split("\n\n"))


async def test_max_tokens_length_is_the_finish_reason(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "one two three four five"
    result = await oai.completions.create(model="completion", prompt="x", suffix="", max_tokens=2)
    assert result.choices[0].text == "one two"
    assert result.choices[0].finish_reason == "length"


async def test_chat_completion_and_stream(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    expected = default_reply(chat_prompt(messages))
    result = await oai.chat.completions.create(model="chat", messages=messages)  # type: ignore[arg-type]
    assert result.id.startswith("chatcmpl-") and result.object == "chat.completion"
    assert result.model == CHAT_MODEL
    choice = result.choices[0]
    assert (choice.index, choice.message.role, choice.message.content, choice.finish_reason) == (
        0, "assistant", expected, "stop")
    assert result.usage is not None and result.usage.completion_tokens == 4

    stream = await oai.chat.completions.create(model=CHAT_MODEL, messages=messages,  # type: ignore[arg-type]
                                               stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None


async def test_chat_text_parts_and_developer_role(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    await oai.chat.completions.create(model="chat", messages=[
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ])
    sent = ollama_server.behaviour.last_request["/api/chat"]["messages"]
    assert sent == [{"role": "system", "content": "rules"}, {"role": "user", "content": "ab"}]


@pytest.mark.parametrize("encoding", ["float", "base64", None])
async def test_embeddings(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle, encoding: str | None
) -> None:
    # Without encoding_format the client asks for base64 and decodes it itself.
    options = {"encoding_format": encoding} if encoding else {}
    result = await oai.embeddings.create(model="embedding", input=["alpha", "beta"],
                                         **options)  # type: ignore[arg-type]
    sent = ollama_server.behaviour.last_request["/api/embed"]
    assert sent["model"] == EMBEDDING_MODEL and sent["input"] == ["alpha", "beta"]
    assert result.object == "list" and result.model == EMBEDDING_MODEL
    assert [d.index for d in result.data] == [0, 1]
    assert all(d.object == "embedding" for d in result.data)
    for item, text in zip(result.data, ["alpha", "beta"], strict=True):
        expected = embed_vector(text, 8)
        if encoding == "float":
            assert item.embedding == expected
        elif encoding == "base64":
            raw = base64.b64decode(item.embedding)  # type: ignore[arg-type]
            assert list(struct.unpack("<8f", raw)) == pytest.approx(expected, rel=1e-6)
        else:
            assert item.embedding == pytest.approx(expected, rel=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


async def test_models_lists_aliases_configured_and_backend_models(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.models = ("starcoder2:3b",)
    page = await oai.models.list()
    ids = [m.id for m in page.data]
    assert ids == ["completion", "chat", "embedding", COMPLETION_MODEL, CHAT_MODEL,
                   EMBEDDING_MODEL, "starcoder2:3b"]
    assert all(m.object == "model" and m.owned_by == "mimiverse" for m in page.data)
    assert (await oai.models.retrieve("chat")).id == "chat"
    # A model only a backend lists is a valid name: the endpoint's task answers it.
    result = await oai.completions.create(model="starcoder2:3b", prompt="x", suffix="")
    assert result.model == COMPLETION_MODEL


async def test_backend_listing_is_cached(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    for _ in range(3):
        with pytest.raises(openai.NotFoundError):
            await oai.completions.create(model="nope", prompt="x")
    await oai.models.list()
    assert ollama_server.behaviour.requests["/api/tags"] == 1


async def test_unknown_model_is_not_found_in_openai_shape(
    app: AppServer, http: httpx.AsyncClient, oai: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await oai.chat.completions.create(model="gpt-4o",
                                          messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    r = await http.post(f"{app.url}/v1/embeddings", json={"model": "gpt-4o", "input": "x"})
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "model 'gpt-4o' not found",
                                  "type": "invalid_request_error", "param": "model",
                                  "code": "model_not_found"}}
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("gpt-4o")


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("n", 2, "only n=1 is supported"),
    ("echo", True, "only echo=false is supported"),
    ("logprobs", 1, "only logprobs=null is supported"),
    ("best_of", 3, "only best_of=1 is supported"),
])
async def test_unsupported_completion_options_are_400_saying_what_is_allowed(
    oai: openai.AsyncOpenAI, field: str, value: object, allowed: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.completions.create(model="completion", prompt="x", **{field: value})  # type: ignore[call-overload]
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error" and body["param"] == field
    assert body["message"] == f"{field}: {allowed}"


async def test_bad_bodies_are_400_in_openai_shape(app: AppServer, http: httpx.AsyncClient) -> None:
    url = f"{app.url}/v1/chat/completions"
    r = await http.post(url, json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "model: Field required",
                                 "type": "invalid_request_error", "param": "model", "code": None}
    r = await http.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("request body is not")
    r = await http.post(url, json={"model": "chat", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = await http.post(f"{app.url}/v1/embeddings",
                        json={"model": "embedding", "input": "x", "dimensions": 4})
    assert r.status_code == 400
    assert "dimensions is not supported" in r.json()["error"]["message"]


async def test_backend_down_is_503(
    oai: openai.AsyncOpenAI, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.mode = "fail"
    with pytest.raises(openai.InternalServerError) as info:
        await oai.completions.create(model="completion", prompt="x", suffix="")
    assert info.value.status_code == 503
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "server_error" and body["code"] == "all_backends_failed"
    assert "ollama" in body["message"]


async def test_mid_stream_failure_is_a_final_error_event(
    oai: openai.AsyncOpenAI, app: AppServer, http: httpx.AsyncClient,
    ollama_server: ServerHandle,
) -> None:
    ollama_server.behaviour.reply = "one two three four"
    ollama_server.behaviour.mode = "error"
    stream = await oai.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}], stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "one two"
    assert info.value.message == "/api/chat: upstream error"  # its text is not passed on
    r = await http.post(f"{app.url}/v1/completions",
                        json={"model": "completion", "prompt": "x", "stream": True})
    last = r.text.strip().split("\n\n")[-1]
    assert last.startswith('data: {"error":') and "[DONE]" not in r.text
