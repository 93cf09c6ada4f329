"""/api/ai/chat and /api/ai/embed end to end."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import Serve
from tests.api.test_fim import sse_events
from tests.index.test_service import settings
from tests.servers.behaviour import (
    beyond_probes,
    chat_prompt,
    default_reply,
    embed_vector,
    split_tokens,
)
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for
from tests.support.embedder import BowEmbedder

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_chat_answers_with_the_backend_reply(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient, kind: str,
) -> None:
    server = ollama_server if kind == "ollama" else openai_server
    app = serve(settings_for(("b", kind, server.url)))
    r = await http.post(f"{app.url}/api/ai/chat", json={"messages": MESSAGES})
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": default_reply(chat_prompt(MESSAGES)),
                               "tool_calls": [], "reasoning": ""}
    assert body["finish_reason"] == "stop"
    assert (body["model"], body["backend"], body["cached"]) == ("test-model", "b", False)


async def test_chat_streams_sse(
    serve: Serve, openai_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("b", "openai", openai_server.url)))
    openai_server.behaviour.reply = "one two three four"
    r = await http.post(f"{app.url}/api/ai/chat", json={"messages": MESSAGES, "stream": True})
    events = sse_events(r.text)
    assert [k for k, _ in events] == ["delta"] * 5 + ["done"]
    assert [d["text"] for _, d in events[:-1]] == split_tokens("one two three four")
    assert events[-1][1]["completion"] == "one two three four"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": MESSAGES * 129}, "messages"),
        ({"messages": MESSAGES, "max_tokens": -1}, "max_tokens"),
    ],
)
async def test_chat_validation(
    serve: Serve, openai_server: ServerHandle, http: httpx.AsyncClient,
    body: dict[str, object], field: str,
) -> None:
    app = serve(settings_for(("b", "openai", openai_server.url)))
    r = await http.post(f"{app.url}/api/ai/chat", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith(f"{field}: ")
    assert beyond_probes(openai_server.behaviour) == {}


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_embed_one_and_many_with_per_text_cache(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient, kind: str,
) -> None:
    server = ollama_server if kind == "ollama" else openai_server
    app = serve(settings_for(("b", kind, server.url)))
    r = await http.post(f"{app.url}/api/ai/embed", json={"input": "def f(): pass"})
    body = r.json()
    assert body["embeddings"] == [pytest.approx(embed_vector("def f(): pass", 8))]
    assert (body["dimensions"], body["model"], body["cached"]) == (8, "test-embed", False)

    r = await http.post(f"{app.url}/api/ai/embed", json={"input": ["a", "def f(): pass", "a"]})
    body = r.json()
    expected = [embed_vector(t, 8) for t in ("a", "def f(): pass", "a")]
    assert body["embeddings"] == [pytest.approx(v) for v in expected]
    path = "/api/embed" if kind == "ollama" else "/v1/embeddings"
    assert server.behaviour.last_request[path]["input"] == ["a"]  # only the uncached text
    r = await http.post(f"{app.url}/api/ai/embed", json={"input": ["a"]})
    assert r.json()["cached"] is True and r.json()["backend"] == "cache"
    assert server.behaviour.requests[path] == 2


class OwnModel(BowEmbedder):
    """An in-process embedder: it serves its own model, whatever the route calls it."""

    def served_model(self, requested: str) -> str:
        return "own-model"


async def test_a_cached_vector_names_the_model_that_gave_it(
    serve: Serve, http: httpx.AsyncClient,
) -> None:
    embedder = OwnModel()
    app = serve(settings(), {"bow": embedder})  # the route calls its model "bow-64"
    for cached in (False, True):
        body = (await http.post(f"{app.url}/api/ai/embed", json={"input": ["a"]})).json()
        assert (body["model"], body["cached"]) == ("own-model", cached)
    assert embedder.calls == 1


@pytest.mark.parametrize(
    "body", [{"input": []}, {"input": ["x"] * 257}, {"input": 5}, {"input": "x" * 100_001},
             {"input_type": "query", "input": "x"}]  # unknown: refused, never dropped
)
async def test_embed_validation(
    serve: Serve, openai_server: ServerHandle, http: httpx.AsyncClient, body: dict[str, object]
) -> None:
    app = serve(settings_for(("b", "openai", openai_server.url)))
    r = await http.post(f"{app.url}/api/ai/embed", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith(next(iter(body)))
