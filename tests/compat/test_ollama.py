"""The Ollama API with the official `ollama` client against Mimiverse on loopback."""

from __future__ import annotations

import httpx
import ollama
import orjson
import pytest

from mimiverse.fim.prompt import estimate_tokens
from tests.api.conftest import Serve
from tests.compat.conftest import (
    CHAT_MODEL,
    COMPLETION_MODEL,
    EMBEDDING_MODEL,
    QWEN,
    compat_settings,
)
from tests.servers.behaviour import chat_prompt, default_reply, embed_vector, split_tokens
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer


async def test_generate_with_suffix_streams_fim_then_done(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "a + b"
    parts = [p async for p in await oll.generate(
        model=COMPLETION_MODEL, prompt="def add(a, b):\n    return ", suffix="\n",
        stream=True, options={"num_predict": 20, "temperature": 0, "stop": ["\n\n"], "seed": 7},
    )]
    prompt = QWEN.format("def add(a, b):\n    return ", "\n")
    sent = ollama_server.behaviour.last_request["/api/generate"]
    assert sent["prompt"] == prompt and sent["raw"] is True
    assert sent["options"]["num_predict"] == 20 and sent["options"]["seed"] == 7
    assert sent["options"]["temperature"] == 0 and "\n\n" in sent["options"]["stop"]
    assert "".join(p.response or "" for p in parts) == "a + b"
    assert all(p.done is False and p.model == COMPLETION_MODEL for p in parts[:-1])
    last = parts[-1]
    assert last.done is True and last.done_reason == "stop" and last.response == ""
    assert last.prompt_eval_count == len(split_tokens(prompt))
    assert last.eval_count == len(split_tokens("a + b"))
    assert last.load_duration == 0
    assert last.total_duration == last.prompt_eval_duration + last.eval_duration > 0
    assert last.created_at is not None and last.created_at.endswith("Z")


async def test_generate_streams_ndjson_by_default(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "x = 1"
    r = await http.post(f"{app.url}/api/generate",
                        json={"model": "completion", "prompt": "", "suffix": ""})
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in r.text.splitlines()]
    assert len(lines) > 2 and lines[-1]["done"] is True
    assert set(lines[0]) == {"model", "created_at", "response", "done"}
    assert set(lines[-1]) == {"model", "created_at", "response", "done", "done_reason",
                              "total_duration", "load_duration", "prompt_eval_count",
                              "prompt_eval_duration", "eval_count", "eval_duration"}


async def test_generate_not_streamed_is_one_object(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "one two three"
    result = await oll.generate(model="completion", prompt="x", suffix="",
                                options={"num_predict": 2})
    assert result.response == "one two" and result.done is True
    assert result.done_reason == "length" and result.eval_count == 2


async def test_raw_prompt_goes_to_the_completion_model_unchanged(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    # Text that post-processing would cut (a suffix-like repeat, a line break): kept as is.
    ollama_server.behaviour.reply = "x)\n\nprint(y)"
    result = await oll.generate(model=COMPLETION_MODEL, prompt="<custom>f(", raw=True)
    sent = ollama_server.behaviour.last_request["/api/generate"]
    assert sent["prompt"] == "<custom>f(" and "stop" not in sent["options"]
    assert result.response == "x)\n\nprint(y)"


async def test_generate_with_the_chat_model_chats(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    result = await oll.generate(model=CHAT_MODEL, prompt="hi", system="be brief")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert ollama_server.behaviour.last_request["/api/chat"]["messages"] == messages
    assert result.response == default_reply(chat_prompt(messages))
    assert result.model == CHAT_MODEL


async def test_empty_prompt_only_loads(oll: ollama.AsyncClient,
                                       ollama_server: ServerHandle) -> None:
    result = await oll.generate(model="completion", prompt="")
    assert result.done is True and result.done_reason == "load" and result.response == ""
    assert ollama_server.behaviour.requests["/api/generate"] == 0


async def test_chat_streams_messages_by_default(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    messages = [{"role": "user", "content": "hello"}]
    parts = [p async for p in await oll.chat(model="chat", messages=messages, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == default_reply(
        chat_prompt(messages))
    assert all(p.message.role == "assistant" for p in parts)
    assert parts[-1].done is True and parts[-1].done_reason == "stop"
    assert parts[-1].eval_count == 4
    single = await oll.chat(model=CHAT_MODEL, messages=messages)
    assert single.message.content == default_reply(chat_prompt(messages))


async def test_embed_and_the_older_embeddings(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    result = await oll.embed(model=EMBEDDING_MODEL, input=["alpha", "beta"])
    assert [list(v) for v in result.embeddings] == [embed_vector("alpha", 8),
                                                     embed_vector("beta", 8)]
    assert result.model == EMBEDDING_MODEL
    assert result.prompt_eval_count == estimate_tokens("alpha") + estimate_tokens("beta")
    one = await oll.embed(model="embedding", input="alpha")
    assert [list(v) for v in one.embeddings] == [embed_vector("alpha", 8)]
    old = await oll.embeddings(model="embedding", prompt="beta")
    assert list(old.embedding) == embed_vector("beta", 8)


async def test_tags_version_and_show(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    listed = await oll.list()
    names = [m.model for m in listed.models]
    assert names == ["completion", "chat", "embedding", COMPLETION_MODEL, CHAT_MODEL,
                     EMBEDDING_MODEL, "test-model", "test-embed"]
    assert listed.models[3].details is not None
    assert listed.models[3].details.family == "qwen2.5-coder"
    version = await oll._client.get("/api/version")
    assert version.json() == {"version": "0.12.6"}

    shown = await oll.show(COMPLETION_MODEL)
    assert shown.capabilities == ["completion", "insert"]
    assert shown.template == ("{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>"
                              "{{ .Suffix }}<|fim_middle|>{{- else }}{{ .Prompt }}{{- end }}")
    assert shown.parameters is not None
    assert 'stop "<|endoftext|>"' in shown.parameters.split("\n")
    # Unknown to the loopback Ollama: what an Ollama backend carries.
    assert (await oll.show("chat")).capabilities == ["completion", "tools"]
    assert (await oll.show(EMBEDDING_MODEL)).capabilities == ["embedding"]


@pytest.mark.parametrize(("extra", "error"), [
    ({"system": "be brief"}, "system: Extra inputs are not permitted"),
    ({"template": "{{ .Prompt }}"}, "template: Extra inputs are not permitted"),
    ({"options": {"num_ctx": 8}}, "options: Extra inputs are not permitted"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted"),
])
async def test_show_refuses_what_would_change_the_answer_naming_it(
    app: AppServer, http: httpx.AsyncClient, extra: dict[str, object], error: str,
) -> None:
    r = await http.post(f"{app.url}/api/show", json={"model": "chat", **extra})
    assert (r.status_code, r.json()) == (400, {"error": error})


async def test_show_verbose_is_the_same_answer(
    app: AppServer, http: httpx.AsyncClient,
) -> None:
    plain = (await http.post(f"{app.url}/api/show", json={"model": "chat"})).json()
    verbose = (await http.post(f"{app.url}/api/show",
                               json={"model": "chat", "verbose": True})).json()
    plain.pop("modified_at"), verbose.pop("modified_at")
    assert verbose == plain and plain["capabilities"] == ["completion", "tools"]


async def test_errors_in_ollama_shape(
    app: AppServer, http: httpx.AsyncClient, oll: ollama.AsyncClient,
    ollama_server: ServerHandle,
) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await oll.generate(model="llama3:8b", prompt="x")
    assert info.value.status_code == 404 and info.value.error == "model 'llama3:8b' not found"
    r = await http.post(f"{app.url}/api/chat", json={"messages": []})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = await http.post(f"{app.url}/api/generate", json={"model": "embedding", "prompt": "x"})
    assert (r.status_code, r.json()) == (400, {"error": '"embedding" does not support generate'})
    r = await http.post(f"{app.url}/api/generate",
                        json={"model": "completion", "options": {"temperature": 9}})
    assert r.status_code == 400
    assert r.json() == {"error": "options.temperature: Input should be less than or equal to 2"}
    r = await http.post(f"{app.url}/api/show", json={"model": "nope"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'nope' not found"})

    ollama_server.behaviour.mode = "fail"
    with pytest.raises(ollama.ResponseError) as info:
        await oll.chat(model="chat", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503 and "all backends for chat failed" in info.value.error


async def test_mid_stream_failure_is_a_final_error_line(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "one two three four"
    ollama_server.behaviour.mode = "error"
    seen: list[str] = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in await oll.generate(model="completion", prompt="x", suffix="",
                                             stream=True):
            seen.append(part.response or "")
    assert "".join(seen) == "one two"
    assert info.value.error == "/api/generate: upstream error"  # its text is not passed on


async def test_first_token_timeout_is_504_naming_the_timeout(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    settings = compat_settings(("ollama", "ollama", ollama_server.url))
    settings.backends[0].timeouts.first_token_s = 0.2
    app = serve(settings)
    ollama_server.behaviour.mode = "hang"
    r = await http.post(f"{app.url}/api/generate",
                        json={"model": "completion", "prompt": "x", "suffix": ""})
    # The only backend timed out before its first token: nothing left to fall back to.
    assert r.status_code == 504
    assert r.json()["error"] == ("all backends for completion failed: "
                                 "ollama: no first token within 0.2s")


async def test_raw_generation_is_cached_only_when_greedy(
    oll: ollama.AsyncClient, ollama_server: ServerHandle
) -> None:
    first = await oll.generate(model="completion", prompt="<p>", raw=True)
    again = [p async for p in await oll.generate(model="completion", prompt="<p>", raw=True,
                                                 stream=True)]
    assert "".join(p.response or "" for p in again) == first.response == default_reply("<p>")
    assert ollama_server.behaviour.requests["/api/generate"] == 1
    for _ in range(2):
        await oll.generate(model="completion", prompt="<p>", raw=True,
                           options={"temperature": 0.7})
    assert ollama_server.behaviour.requests["/api/generate"] == 3
