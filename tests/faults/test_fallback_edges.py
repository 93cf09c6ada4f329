"""Fallback where nothing reached the client yet: a non-streamed answer whose backend
drops mid-way, and an embedding backend that accepts and never answers."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import Serve
from tests.faults.support import sse_events
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for

REPLY = "abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.mark.parametrize("mode", ["die", "malformed"])
async def test_a_non_streamed_answer_falls_back_when_its_backend_fails_mid_way(
    serve: Serve, http: httpx.AsyncClient, ollama_server: ServerHandle,
    openai_server: ServerHandle, mode: str,
) -> None:
    app = serve(settings_for(("a", "ollama", ollama_server.url),
                             ("b", "openai", openai_server.url)))
    ollama_server.behaviour.configure(mode=mode, after_tokens=3, reply=REPLY)
    openai_server.behaviour.configure(reply=REPLY)
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": f"{mode} = "})
    assert r.status_code == 200, r.text
    assert r.json()["backend"] == "b"
    chat = await http.post(f"{app.url}/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": mode}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == REPLY
    # Streamed, the first tokens did reach the client: no splicing, the stream ends in error.
    streamed = await http.post(f"{app.url}/api/ai/fim/stream", json={"prefix": f"s{mode} = "})
    kinds = [kind for kind, _ in sse_events(streamed.text)]
    assert kinds[-1] == "error" and "delta" in kinds


async def test_a_mid_way_failure_with_no_backend_left_is_still_a_502(
    serve: Serve, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    app = serve(settings_for(("a", "ollama", ollama_server.url)))
    ollama_server.behaviour.configure(mode="die", after_tokens=3, reply=REPLY)
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "alone = "})
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "stream_interrupted"


@pytest.mark.timeout(60)  # the total limit is 300 s: only the first-byte one can end it here
async def test_an_embedding_backend_that_never_answers_gives_way_at_the_first_byte_limit(
    serve: Serve, http: httpx.AsyncClient, ollama_server: ServerHandle,
    openai_server: ServerHandle,
) -> None:
    app = serve(settings_for(("a", "ollama", ollama_server.url),
                             ("b", "openai", openai_server.url),
                             timeouts={"first_token_s": 0.5, "total_s": 300}))
    ollama_server.behaviour.configure(mode="hang")  # accepts, never answers
    r = await http.post(f"{app.url}/v1/embeddings", json={"model": "embedding",
                                                          "input": ["vectors please"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"][0]["embedding"]) > 0
    models = (await http.get(f"{app.url}/api/models/available")).text
    assert "/api/embed: no answer began within 0.5s" in models
