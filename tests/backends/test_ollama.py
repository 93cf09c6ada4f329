"""OllamaBackend against the loopback Ollama, and the official `ollama` client against it."""

from __future__ import annotations

import sys
import types
from collections.abc import AsyncGenerator, AsyncIterator

import ollama
import orjson
import pytest

from mimiverse.backends import registry
from mimiverse.backends.base import Backend, ChatMessage, ChatRequest, Delta, GenerateRequest
from mimiverse.backends.ollama import KEEP_ALIVE, OllamaBackend
from mimiverse.backends.registry import BACKEND_KINDS, build_backend
from mimiverse.config import BackendSettings, Timeouts
from mimiverse.errors import (
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
)
from tests.servers.behaviour import chat_prompt, default_reply, embed_vector, split_tokens
from tests.servers.harness import ServerHandle, start_process

PROMPT = "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>"


def settings(url: str, **extra: object) -> BackendSettings:
    return BackendSettings.model_validate({"name": "ollama-test", "kind": "ollama", "url": url,
                                           **extra})


@pytest.fixture
async def backend(ollama_server: ServerHandle) -> AsyncIterator[OllamaBackend]:
    b = OllamaBackend(settings(ollama_server.url))
    yield b
    await b.aclose()


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


async def test_generate_streams_the_reply_with_a_final_delta(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    deltas = await collect(backend.stream_generate(GenerateRequest("test-model", PROMPT)))

    reply = default_reply(PROMPT)
    assert [d.text for d in deltas[:-1]] == split_tokens(reply)
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert (final.text, final.finish_reason) == ("", "stop")
    assert (final.prompt_tokens, final.completion_tokens) == (len(split_tokens(PROMPT)), 4)
    assert ollama_server.behaviour.last_request["/api/generate"] == {
        "model": "test-model",
        "prompt": PROMPT,
        "raw": True,
        "stream": True,
        "keep_alive": KEEP_ALIVE,
        "options": {"num_predict": 128, "temperature": 0.0},
    }


async def test_generate_sends_every_option_and_honours_stop(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "return a + b\nprint(1)"
    request = GenerateRequest("test-model", PROMPT, max_tokens=50, temperature=0.2,
                              stop=("\n", "<|endoftext|>"), seed=7, top_p=0.9)

    deltas = await collect(backend.stream_generate(request))

    assert "".join(d.text for d in deltas) == "return a + b"
    assert deltas[-1].finish_reason == "stop"
    assert ollama_server.behaviour.last_request["/api/generate"]["options"] == {
        "num_predict": 50, "temperature": 0.2, "stop": ["\n", "<|endoftext|>"], "seed": 7,
        "top_p": 0.9,
    }


async def test_generate_reports_length_when_max_tokens_cuts_it(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "one two three four five"

    deltas = await collect(backend.stream_generate(GenerateRequest("m", "p", max_tokens=3)))

    assert [d.text for d in deltas] == ["one", " two", " thre", ""]
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 3)


async def test_chat_streams_the_reply(backend: OllamaBackend, ollama_server: ServerHandle) -> None:
    messages = (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))

    deltas = await collect(backend.stream_chat(ChatRequest("test-model", messages, seed=1)))

    wire = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert "".join(d.text for d in deltas) == default_reply(chat_prompt(wire))
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens == 4
    assert ollama_server.behaviour.last_request["/api/chat"] == {
        "model": "test-model",
        "messages": wire,
        "stream": True,
        "keep_alive": KEEP_ALIVE,
        "options": {"num_predict": 512, "temperature": 0.0, "seed": 1},
    }


async def test_embed_batch(backend: OllamaBackend, ollama_server: ServerHandle) -> None:
    texts = ["def a(): pass", "class B: ...", "def a(): pass"]

    vectors = await backend.embed_batch("test-embed", texts)

    assert vectors == [embed_vector(t, 8) for t in texts]
    assert ollama_server.behaviour.last_request["/api/embed"] == {
        "model": "test-embed", "input": texts, "keep_alive": KEEP_ALIVE,
    }
    assert await backend.embed_batch("test-embed", []) == []
    assert ollama_server.behaviour.requests["/api/embed"] == 1


@pytest.mark.parametrize(
    "embeddings",
    [[[0.1, 0.2]], [[0.1, 0.2], [0.3]], [[0.1, 0.2], ["x", 0.3]], [[], []]],
    ids=["too-few", "ragged", "not-numbers", "empty"],
)
async def test_embed_batch_refuses_bad_vectors(
    backend: OllamaBackend, ollama_server: ServerHandle, embeddings: list[list[object]]
) -> None:
    ollama_server.behaviour.canned["/api/embed"] = orjson.dumps({"embeddings": embeddings})

    with pytest.raises(BackendProtocolError):
        await backend.embed_batch("test-embed", ["a", "b"])


async def test_models_loaded_models_and_health(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    assert await backend.list_models() == ["test-model", "test-embed"]
    assert await backend.loaded_models() == []
    await collect(backend.stream_generate(GenerateRequest("test-model", "x")))
    assert await backend.loaded_models() == ["test-model"]
    await backend.check_health()
    assert ollama_server.behaviour.requests["/api/version"] == 1


@pytest.mark.parametrize("method", ["generate", "chat", "embed", "models", "health"])
async def test_http_500_is_unavailable(
    backend: OllamaBackend, ollama_server: ServerHandle, method: str
) -> None:
    ollama_server.behaviour.mode = "fail"

    with pytest.raises(BackendUnavailable, match=r"^HTTP 500 Internal Server Error$") as info:
        await call(backend, method)
    assert info.value.backend == "ollama-test"


@pytest.mark.parametrize("method", ["generate", "chat", "embed"])
async def test_unknown_model_is_rejected(
    backend: OllamaBackend, ollama_server: ServerHandle, method: str
) -> None:
    ollama_server.behaviour.mode = "reject"

    with pytest.raises(BackendRejected, match='model "test-model" not found') as info:
        await call(backend, method)
    assert info.value.status_code == 404


async def call(backend: OllamaBackend, method: str) -> object:
    if method == "generate":
        return await collect(backend.stream_generate(GenerateRequest("test-model", "p")))
    if method == "chat":
        messages = (ChatMessage("user", "hi"),)
        return await collect(backend.stream_chat(ChatRequest("test-model", messages)))
    if method == "embed":
        return await backend.embed_batch("test-model", ["a"])
    if method == "models":
        return await backend.list_models()
    return await backend.check_health()


async def test_connection_dropped_mid_stream_is_unavailable(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.mode = "die"
    received: list[str] = []

    with pytest.raises(BackendUnavailable, match="connection dropped before the response"):
        async for delta in backend.stream_generate(GenerateRequest("test-model", "p")):
            received.append(delta.text)
    assert received == split_tokens(default_reply("p"))[:2]


async def test_error_line_mid_stream_is_unavailable(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.mode = "error"
    ollama_server.behaviour.after_tokens = 1

    with pytest.raises(BackendUnavailable, match=r"^/api/chat: upstream error$"):
        await collect(backend.stream_chat(ChatRequest("m", (ChatMessage("user", "x"),))))


async def test_malformed_line_is_a_protocol_error(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.mode = "malformed"

    with pytest.raises(BackendProtocolError):
        await collect(backend.stream_generate(GenerateRequest("test-model", "p")))


@pytest.mark.parametrize(
    "body",
    [
        b'{"response": "a", "done": false}\n',  # ends without done
        b'["not", "an", "object"]\n',
        b'{"response": 42, "done": false}\n',
    ],
    ids=["no-done", "not-object", "text-not-string"],
)
async def test_broken_streams_are_protocol_errors(
    backend: OllamaBackend, ollama_server: ServerHandle, body: bytes
) -> None:
    ollama_server.behaviour.canned["/api/generate"] = body

    with pytest.raises(BackendProtocolError):
        await collect(backend.stream_generate(GenerateRequest("test-model", "p")))


async def test_non_json_list_is_a_protocol_error(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.mode = "malformed"

    with pytest.raises(BackendProtocolError):
        await backend.list_models()


async def test_connection_refused_after_stop_is_unavailable(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.stop()

    with pytest.raises(BackendUnavailable, match="cannot reach"):
        await collect(backend.stream_generate(GenerateRequest("test-model", "p")))
    with pytest.raises(BackendUnavailable):
        await backend.embed_batch("test-embed", ["a"])


async def test_hung_server_times_out_and_sees_the_request_cancelled(
    ollama_server: ServerHandle,
) -> None:
    ollama_server.behaviour.mode = "hang"
    b = OllamaBackend(settings(ollama_server.url, timeouts=Timeouts(total_s=0.1)))
    try:
        with pytest.raises(BackendTimeout):
            await collect(b.stream_generate(GenerateRequest("test-model", "p")))
    finally:
        await b.aclose()
    await ollama_server.behaviour.wait_until(lambda s: s.cancelled == 1)


async def test_stalled_stream_times_out_after_the_first_tokens(
    ollama_server: ServerHandle,
) -> None:
    ollama_server.behaviour.mode = "stall"
    b = OllamaBackend(settings(ollama_server.url, timeouts=Timeouts(total_s=0.1)))
    received: list[str] = []
    try:
        with pytest.raises(BackendTimeout):
            async for delta in b.stream_generate(GenerateRequest("test-model", "p")):
                received.append(delta.text)
    finally:
        await b.aclose()
    assert received == split_tokens(default_reply("p"))[:2]
    await ollama_server.behaviour.wait_until(lambda s: s.cancelled == 1)


async def test_closing_the_stream_early_cancels_the_upstream_request(
    backend: OllamaBackend, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.delay_s = 0.05
    stream = backend.stream_generate(GenerateRequest("test-model", "p"))

    assert isinstance(stream, AsyncGenerator)  # closable: the router closes it early

    first = await anext(stream)
    await stream.aclose()

    assert first.text == split_tokens(default_reply("p"))[0]
    await ollama_server.behaviour.wait_until(lambda s: s.cancelled == 1)
    assert ollama_server.behaviour.completed == 0


async def test_connections_are_reused(backend: OllamaBackend, ollama_server: ServerHandle) -> None:
    for _ in range(3):
        await collect(backend.stream_generate(GenerateRequest("test-model", "p")))
    await backend.embed_batch("test-embed", ["a"])

    assert ollama_server.behaviour.requests["/api/generate"] == 3
    assert len(ollama_server.behaviour.peers) == 1


async def test_api_key_is_sent_as_bearer_token(ollama_server: ServerHandle) -> None:
    ollama_server.behaviour.api_key = "s3cret"
    with_key = OllamaBackend(settings(ollama_server.url, api_key="s3cret"))
    without = OllamaBackend(settings(ollama_server.url))
    try:
        assert await with_key.list_models() == ["test-model", "test-embed"]
        with pytest.raises(BackendRejected) as info:
            await without.list_models()
        assert info.value.status_code == 401
    finally:
        await with_key.aclose()
        await without.aclose()


async def test_registry_builds_ollama_backends(ollama_server: ServerHandle) -> None:
    assert BACKEND_KINDS["ollama"] is OllamaBackend
    assert set(BACKEND_KINDS) == {"ollama", "openai", "llamacpp", "sentence-transformers",
                                 "triton", "whisper"}
    b = build_backend(settings(ollama_server.url))
    try:
        assert isinstance(b, OllamaBackend)
        assert b.name == "ollama-test"
        await b.check_health()
    finally:
        await b.aclose()


def test_registry_llamacpp_without_the_extra_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mimiverse.backends.llamacpp", None)  # import fails
    # The registry remembers a kind once loaded (default configurations load llamacpp).
    kinds = registry.BACKEND_KINDS
    assert isinstance(kinds, registry._BackendKinds)
    monkeypatch.delitem(kinds._classes, "llamacpp", raising=False)

    with pytest.raises(ConfigError, match=r"install mimiverse\[llamacpp\]"):
        build_backend(BackendSettings(name="local", kind="llamacpp", model_path="m.gguf"))


def test_registry_loads_llamacpp_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    class LlamaCppBackend(Backend):
        kind = "llamacpp"

    module = types.ModuleType("mimiverse.backends.llamacpp")
    monkeypatch.setitem(sys.modules, "mimiverse.backends.llamacpp", module)
    with pytest.raises(ConfigError, match="does not define LlamaCppBackend"):
        registry._load_llamacpp()

    module.LlamaCppBackend = LlamaCppBackend  # type: ignore[attr-defined]
    assert registry._load_llamacpp() is LlamaCppBackend


# --- the official client against the test server: proof that the double is faithful -----


async def test_official_client_generate_chat_embed_and_lists(ollama_server: ServerHandle) -> None:
    async with ollama.AsyncClient(host=ollama_server.url) as client:
        whole = await client.generate(model="test-model", prompt="p", raw=True)
        assert whole.response == default_reply("p")
        assert (whole.done, whole.done_reason, whole.eval_count) == (True, "stop", 4)

        parts = [p async for p in await client.generate(
            model="test-model", prompt="p", stream=True, options={"num_predict": 2})]
        assert [p.response for p in parts] == [*split_tokens(default_reply("p"))[:2], ""]
        assert parts[-1].done_reason == "length"

        messages = [{"role": "user", "content": "hi"}]
        chunks = [c async for c in await client.chat(
            model="test-model", messages=messages, stream=True)]
        assert "".join(c.message.content or "" for c in chunks) == default_reply(
            chat_prompt(messages))
        assert chunks[-1].done is True

        embedded = await client.embed(model="test-embed", input=["a", "b"])
        assert [list(v) for v in embedded.embeddings] == [embed_vector(t, 8) for t in "ab"]

        listed = await client.list()
        assert [m.model for m in listed.models] == ["test-model", "test-embed"]
        running = await client.ps()
        assert [m.model for m in running.models] == ["test-model", "test-embed"]


async def test_official_client_sees_protocol_errors(ollama_server: ServerHandle) -> None:
    async with ollama.AsyncClient(host=ollama_server.url) as client:
        ollama_server.behaviour.mode = "reject"
        with pytest.raises(ollama.ResponseError) as info:
            await client.generate(model="nope", prompt="p")
        assert info.value.status_code == 404
        assert info.value.error == 'model "nope" not found, try pulling it first'

        ollama_server.behaviour.mode = "error"
        with pytest.raises(ollama.ResponseError, match="runner process has terminated"):
            async for _ in await client.generate(model="m", prompt="p", stream=True):
                pass


async def test_server_runs_as_a_process_for_benchmarks() -> None:
    with start_process("tests.servers.ollama_server", args=["--reply", "a b c"]) as proc:
        b = OllamaBackend(settings(proc.url))
        try:
            deltas = await collect(b.stream_generate(GenerateRequest("test-model", "p")))
            assert [d.text for d in deltas] == ["a", " b", " c", ""]
            proc.configure(mode="fail")
            with pytest.raises(BackendUnavailable):
                await b.list_models()
            assert proc.stats()["requests"] == {"/api/generate": 1, "/api/tags": 1}
        finally:
            await b.aclose()
