"""OpenAIBackend against the loopback OpenAI server, and the official `openai` client on it."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncGenerator, AsyncIterator

import openai
import orjson
import pytest

from mimiverse.backends.base import ChatMessage, ChatRequest, Delta, GenerateRequest
from mimiverse.backends.openai import OpenAIBackend
from mimiverse.backends.registry import BACKEND_KINDS, build_backend
from mimiverse.config import BackendSettings, Timeouts
from mimiverse.errors import (
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from tests.servers.behaviour import chat_prompt, default_reply, embed_vector, split_tokens
from tests.servers.harness import ServerHandle, start_process

PROMPT = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"
USER = (ChatMessage("user", "hi"),)
WIRE_USER = [{"role": "user", "content": "hi"}]


def settings(url: str, **extra: object) -> BackendSettings:
    return BackendSettings.model_validate({"name": "vllm-test", "kind": "openai", "url": url,
                                           **extra})


@pytest.fixture
async def backend(openai_server: ServerHandle) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend(settings(openai_server.url))
    yield b
    await b.aclose()


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


def sse(*events: object, done: bool = True, newline: str = "\n") -> bytes:
    """A canned SSE body: each event a JSON chunk (or a raw str line), then [DONE]."""
    lines = [e if isinstance(e, str) else "data: " + orjson.dumps(e).decode() for e in events]
    if done:
        lines.append("data: [DONE]")
    return "".join(line + newline + newline for line in lines).encode()


async def test_completion_streams_text_then_a_final_delta_with_usage(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    deltas = await collect(backend.stream_generate(GenerateRequest("test-model", PROMPT)))

    assert [d.text for d in deltas[:-1]] == split_tokens(default_reply(PROMPT))
    final = deltas[-1]
    assert (final.text, final.finish_reason) == ("", "stop")
    assert (final.prompt_tokens, final.completion_tokens) == (len(split_tokens(PROMPT)), 4)
    assert openai_server.behaviour.last_request["/v1/completions"] == {
        "model": "test-model",
        "prompt": PROMPT,
        "max_tokens": 128,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_completion_sends_every_option_and_honours_stop(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.reply = "return a + b\nprint(1)"
    request = GenerateRequest("test-model", PROMPT, max_tokens=50, temperature=0.2,
                              stop=("\n",), seed=7, top_p=0.9)

    deltas = await collect(backend.stream_generate(request))

    assert "".join(d.text for d in deltas) == "return a + b"
    assert deltas[-1].finish_reason == "stop"
    sent = openai_server.behaviour.last_request["/v1/completions"]
    assert {k: sent[k] for k in ("max_tokens", "temperature", "stop", "seed", "top_p")} == {
        "max_tokens": 50, "temperature": 0.2, "stop": ["\n"], "seed": 7, "top_p": 0.9,
    }


async def test_completion_reports_length(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.reply = "one two three four five"

    deltas = await collect(backend.stream_generate(GenerateRequest("m", "p", max_tokens=3)))

    assert [d.text for d in deltas] == ["one", " two", " thre", ""]
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 3)


async def test_chat_streams_and_skips_the_role_chunk(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    messages = (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))

    deltas = await collect(backend.stream_chat(ChatRequest("test-model", messages, top_p=0.5)))

    wire = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert [d.text for d in deltas[:-1]] == split_tokens(default_reply(chat_prompt(wire)))
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("stop", 4)
    assert openai_server.behaviour.last_request["/v1/chat/completions"] == {
        "model": "test-model",
        "messages": wire,
        "max_tokens": 512,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "top_p": 0.5,
    }


async def test_sse_comments_are_ignored(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.sse_comments = True

    deltas = await collect(backend.stream_chat(ChatRequest("test-model", USER)))

    assert "".join(d.text for d in deltas) == default_reply(chat_prompt(WIRE_USER))


async def test_sse_parsing_is_lenient_where_servers_differ(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    # CRLF line ends (sse-starlette), a comment, an `event:` field, a data field split over
    # two lines, usage inside the finishing chunk (llama.cpp) and no [DONE].
    body = sse(
        ": keep-alive",
        "event: message\ndata: {\"choices\": [{\"index\": 0, \"text\": \"a\"}]}",
        'data: {"choices": [{"index": 0,\ndata:  "text": "b"}]}',
        {"choices": [{"index": 0, "text": "c", "finish_reason": "length"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 3}},
        done=False, newline="\r\n",
    )
    openai_server.behaviour.canned["/v1/completions"] = body

    deltas = await collect(backend.stream_generate(GenerateRequest("test-model", "p")))

    assert [d.text for d in deltas] == ["a", "b", "c", ""]
    assert (deltas[-1].finish_reason, deltas[-1].prompt_tokens) == ("length", 3)


async def test_stream_without_usage_has_no_token_counts(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.canned["/v1/chat/completions"] = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "content_filter"}]},
    )

    deltas = await collect(backend.stream_chat(ChatRequest("test-model", USER)))

    assert [d.text for d in deltas] == ["x", ""]
    # Reasons other than length and tool calls read as "stop".
    assert (deltas[-1].finish_reason, deltas[-1].prompt_tokens) == ("stop", None)


async def test_embed_batch(backend: OpenAIBackend, openai_server: ServerHandle) -> None:
    texts = ["def a(): pass", "class B: ..."]

    vectors = await backend.embed_batch("test-embed", texts)

    assert vectors == [embed_vector(t, 8) for t in texts]
    assert openai_server.behaviour.last_request["/v1/embeddings"] == {
        "model": "test-embed", "input": texts, "encoding_format": "float",
    }
    assert await backend.embed_batch("test-embed", []) == []
    assert openai_server.behaviour.requests["/v1/embeddings"] == 1


async def test_embed_batch_orders_by_index_and_decodes_base64(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    packed = base64.b64encode(struct.pack("<2f", 0.5, -0.25)).decode()
    openai_server.behaviour.canned["/v1/embeddings"] = orjson.dumps({"data": [
        {"index": 1, "embedding": packed},
        {"index": 0, "embedding": [1.0, 2.0]},
    ]})

    assert await backend.embed_batch("test-embed", ["a", "b"]) == [[1.0, 2.0], [0.5, -0.25]]


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"index": 0, "embedding": [1.0]}]},
        {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]},
        {"data": [{"embedding": [1.0]}, {"embedding": [2.0]}]},
        {"data": [{"index": 0, "embedding": "!!"}, {"index": 1, "embedding": [2.0]}]},
        {"object": "list"},
    ],
    ids=["too-few", "ragged", "no-index", "bad-base64", "no-data"],
)
async def test_embed_batch_refuses_bad_answers(
    backend: OpenAIBackend, openai_server: ServerHandle, body: object
) -> None:
    openai_server.behaviour.canned["/v1/embeddings"] = orjson.dumps(body)

    with pytest.raises(BackendProtocolError):
        await backend.embed_batch("test-embed", ["a", "b"])


async def test_models_and_health(backend: OpenAIBackend, openai_server: ServerHandle) -> None:
    assert await backend.list_models() == ["test-model", "test-embed"]
    await backend.check_health()
    assert openai_server.behaviour.requests["/v1/models"] == 2


async def call(backend: OpenAIBackend, method: str) -> object:
    if method == "generate":
        return await collect(backend.stream_generate(GenerateRequest("test-model", "p")))
    if method == "chat":
        return await collect(backend.stream_chat(ChatRequest("test-model", USER)))
    if method == "embed":
        return await backend.embed_batch("test-model", ["a"])
    if method == "models":
        return await backend.list_models()
    return await backend.check_health()


@pytest.mark.parametrize("method", ["generate", "chat", "embed", "models", "health"])
async def test_http_500_is_unavailable(
    backend: OpenAIBackend, openai_server: ServerHandle, method: str
) -> None:
    openai_server.behaviour.mode = "fail"

    expected = r"^HTTP 500 Internal Server Error: server_error$"
    with pytest.raises(BackendUnavailable, match=expected) as info:
        await call(backend, method)
    assert info.value.backend == "vllm-test"


@pytest.mark.parametrize("method", ["generate", "chat", "embed"])
async def test_unknown_model_is_rejected(
    backend: OpenAIBackend, openai_server: ServerHandle, method: str
) -> None:
    openai_server.behaviour.mode = "reject"

    with pytest.raises(BackendRejected, match=r"^HTTP 404 Not Found: model_not_found$") as info:
        await call(backend, method)
    assert info.value.status_code == 404


@pytest.mark.parametrize("method", ["generate", "chat"])
async def test_connection_dropped_mid_stream_is_unavailable(
    backend: OpenAIBackend, openai_server: ServerHandle, method: str
) -> None:
    openai_server.behaviour.mode = "die"
    openai_server.behaviour.after_tokens = 3

    with pytest.raises(BackendUnavailable, match="connection dropped before the response"):
        await call(backend, method)


async def test_dropped_connection_keeps_the_text_already_streamed(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.mode = "die"
    received: list[str] = []

    with pytest.raises(BackendUnavailable):
        async for delta in backend.stream_generate(GenerateRequest("test-model", "p")):
            received.append(delta.text)
    assert received == split_tokens(default_reply("p"))[:2]


async def test_embeddings_cut_short_are_unavailable(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.mode = "die"

    with pytest.raises(BackendUnavailable):
        await backend.embed_batch("test-embed", ["a"])


async def test_error_event_mid_stream_is_unavailable(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.mode = "error"

    with pytest.raises(BackendUnavailable, match=r"upstream error: server_error$"):
        await collect(backend.stream_chat(ChatRequest("test-model", USER)))


async def test_llamacpp_error_field_is_unavailable(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.canned["/v1/completions"] = sse(
        {"choices": [{"index": 0, "text": "a"}]},
        'error: {"code": 500, "message": "slot unavailable", "type": "server_error"}',
        done=False,
    )

    with pytest.raises(BackendUnavailable, match=r"upstream error: server_error$"):
        await collect(backend.stream_generate(GenerateRequest("test-model", "p")))


async def test_malformed_event_is_a_protocol_error(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.mode = "malformed"

    with pytest.raises(BackendProtocolError):
        await collect(backend.stream_generate(GenerateRequest("test-model", "p")))


@pytest.mark.parametrize(
    "body",
    [
        sse({"choices": [{"index": 0, "text": "a"}]}, done=False),
        sse('data: ["list"]'),
        sse({"choices": "nope"}),
        sse({"choices": [{"index": 0, "delta": "nope"}]}),
        b'{"id": "not SSE at all"}',
    ],
    ids=["no-finish-no-done", "not-object", "choices-not-list", "delta-not-object", "not-sse"],
)
async def test_broken_streams_are_protocol_errors(
    backend: OpenAIBackend, openai_server: ServerHandle, body: bytes
) -> None:
    openai_server.behaviour.canned["/v1/chat/completions"] = body

    with pytest.raises(BackendProtocolError):
        await collect(backend.stream_chat(ChatRequest("test-model", USER)))


async def test_connection_refused_after_stop_is_unavailable(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.stop()

    with pytest.raises(BackendUnavailable, match="cannot reach"):
        await collect(backend.stream_chat(ChatRequest("test-model", USER)))
    with pytest.raises(BackendUnavailable):
        await backend.list_models()


async def test_hung_server_times_out_and_sees_the_request_cancelled(
    openai_server: ServerHandle,
) -> None:
    openai_server.behaviour.mode = "hang"
    b = OpenAIBackend(settings(openai_server.url, timeouts=Timeouts(total_s=0.1)))
    try:
        with pytest.raises(BackendTimeout):
            await b.embed_batch("test-embed", ["a"])
    finally:
        await b.aclose()
    await openai_server.behaviour.wait_until(lambda s: s.cancelled == 1)


async def test_stalled_stream_times_out(openai_server: ServerHandle) -> None:
    openai_server.behaviour.mode = "stall"
    b = OpenAIBackend(settings(openai_server.url, timeouts=Timeouts(total_s=0.1)))
    try:
        with pytest.raises(BackendTimeout):
            await collect(b.stream_chat(ChatRequest("test-model", USER)))
    finally:
        await b.aclose()
    await openai_server.behaviour.wait_until(lambda s: s.cancelled == 1)


async def test_closing_the_stream_early_cancels_the_upstream_request(
    backend: OpenAIBackend, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.delay_s = 0.05
    stream = backend.stream_chat(ChatRequest("test-model", USER))

    assert isinstance(stream, AsyncGenerator)  # closable: the router closes it early

    first = await anext(stream)
    await stream.aclose()

    assert first.text == split_tokens(default_reply(chat_prompt(WIRE_USER)))[0]
    await openai_server.behaviour.wait_until(lambda s: s.cancelled == 1)
    assert openai_server.behaviour.completed == 0


async def test_connections_are_reused(backend: OpenAIBackend, openai_server: ServerHandle) -> None:
    for _ in range(3):
        await collect(backend.stream_generate(GenerateRequest("test-model", "p")))
    await backend.embed_batch("test-embed", ["a"])

    assert openai_server.behaviour.requests["/v1/completions"] == 3
    assert len(openai_server.behaviour.peers) == 1


async def test_api_key_is_sent_as_bearer_token(openai_server: ServerHandle) -> None:
    openai_server.behaviour.api_key = "sk-test"
    with_key = OpenAIBackend(settings(openai_server.url, api_key="sk-test"))
    without = OpenAIBackend(settings(openai_server.url))
    try:
        assert await with_key.list_models() == ["test-model", "test-embed"]
        expected = r"^HTTP 401 Unauthorized: invalid_api_key$"
        with pytest.raises(BackendRejected, match=expected) as info:
            await without.list_models()
        assert info.value.status_code == 401
    finally:
        await with_key.aclose()
        await without.aclose()


async def test_registry_builds_openai_backends(openai_server: ServerHandle) -> None:
    assert BACKEND_KINDS["openai"] is OpenAIBackend
    b = build_backend(settings(openai_server.url))
    try:
        assert isinstance(b, OpenAIBackend)
        assert await b.list_models() == ["test-model", "test-embed"]
    finally:
        await b.aclose()


# --- the official client against the test server: proof that the double is faithful -----


def official(server: ServerHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


async def test_official_client_completions_and_chat(openai_server: ServerHandle) -> None:
    async with official(openai_server) as client:
        whole = await client.completions.create(model="test-model", prompt="p", max_tokens=2)
        assert whole.choices[0].text == "".join(split_tokens(default_reply("p"))[:2])
        assert whole.choices[0].finish_reason == "length"
        assert whole.usage is not None and whole.usage.completion_tokens == 2

        parts = [c async for c in await client.completions.create(
            model="test-model", prompt="p", stream=True)]
        assert "".join(c.choices[0].text for c in parts) == default_reply("p")[:16]

        stream = await client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == default_reply(chat_prompt(WIRE_USER))
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 4

        reply = await client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stop=":")
        assert reply.choices[0].message.content == "<reply"


async def test_official_client_embeddings_and_models(openai_server: ServerHandle) -> None:
    async with official(openai_server) as client:
        # The client asks for base64 unless told otherwise and decodes it itself.
        packed = await client.embeddings.create(model="test-embed", input=["a", "b"])
        for item, text in zip(packed.data, "ab", strict=True):
            assert item.embedding == pytest.approx(embed_vector(text, 8), abs=1e-6)
        floats = await client.embeddings.create(
            model="test-embed", input="a", encoding_format="float")
        assert floats.data[0].embedding == embed_vector("a", 8)

        models = [m.id async for m in client.models.list()]
        assert models == ["test-model", "test-embed"]


async def test_official_client_sees_protocol_errors(openai_server: ServerHandle) -> None:
    async with official(openai_server) as client:
        openai_server.behaviour.mode = "reject"
        with pytest.raises(openai.NotFoundError) as info:
            await client.completions.create(model="nope", prompt="p")
        assert info.value.code == "model_not_found"

        openai_server.behaviour.mode = "fail"
        with pytest.raises(openai.InternalServerError):
            await client.models.list()

        openai_server.behaviour.mode = "error"
        with pytest.raises(openai.APIError, match="test server error mid-stream"):
            async for _ in await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True):
                pass


async def test_server_runs_as_a_process_for_benchmarks() -> None:
    with start_process("tests.servers.openai_server") as proc:
        b = OpenAIBackend(settings(proc.url))
        try:
            deltas = await collect(b.stream_chat(ChatRequest("test-model", USER)))
            assert "".join(d.text for d in deltas) == default_reply(chat_prompt(WIRE_USER))
            proc.configure(mode="reject")
            with pytest.raises(BackendRejected):
                await b.embed_batch("test-embed", ["a"])
            proc.reset()
            assert await b.embed_batch("test-embed", ["a"]) == [embed_vector("a", 8)]
        finally:
            await b.aclose()
