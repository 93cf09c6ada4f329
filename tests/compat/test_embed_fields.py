"""Every field an embedding client sends is honoured, passed through to a backend of the
client's own protocol, or refused with a 400 naming it: with the official clients, against
a loopback backend of each kind."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.api.conftest import Serve
from tests.compat.conftest import EMBEDDING_MODEL, Upstream, compat_settings, pick_upstream
from tests.servers.behaviour import embed_vector
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer

EMBED_PATH = {"ollama": "/api/embed", "openai": "/v1/embeddings"}


@pytest.fixture(params=["ollama", "openai"])
def upstream(request: pytest.FixtureRequest, ollama_server: ServerHandle,
             openai_server: ServerHandle) -> Upstream:
    return pick_upstream(request, ollama_server, openai_server, EMBED_PATH)


@pytest.fixture
def app(serve: Serve, upstream: Upstream) -> AppServer:
    return serve(upstream.settings())


async def test_unknown_openai_fields_reach_an_openai_backend_or_are_refused(
    oai: openai.AsyncOpenAI, upstream: Upstream,
) -> None:
    if upstream.kind == "openai":
        result = await oai.embeddings.create(model="embedding", input=["alpha"], user="u-1",
                                             encoding_format="float")
        sent = upstream.sent()
        assert sent["user"] == "u-1" and sent["input"] == ["alpha"]
        assert sent["model"] == EMBEDDING_MODEL
        assert result.data[0].embedding == embed_vector("alpha", 8)
        return
    with pytest.raises(openai.BadRequestError) as info:
        await oai.embeddings.create(model="embedding", input=["alpha"], user="u-1")
    message = info.value.body["message"]  # type: ignore[index]
    assert "openai:user" in message and "'ollama' (ollama)" in message
    assert upstream.calls() == 0  # nothing went upstream


async def test_passed_through_fields_are_part_of_the_cache_key(
    oai: openai.AsyncOpenAI, oll: ollama.AsyncClient, upstream: Upstream,
) -> None:
    async def embed(value: object = None) -> None:
        """One text, with a field of the backend's own protocol set to `value`."""
        if upstream.kind == "openai":
            extra: dict[str, Any] = {"user": value} if value is not None else {}
            await oai.embeddings.create(model="embedding", input="alpha", **extra)
        else:
            await oll.embed(model="embedding", input="alpha", truncate=value)  # type: ignore[arg-type]

    field = "user" if upstream.kind == "openai" else "truncate"
    first, second = ("a", "b") if upstream.kind == "openai" else (True, False)
    await embed(first)
    await embed(second)
    assert upstream.calls() == 2 and upstream.sent()[field] == second
    await embed(first)  # cached
    await embed()  # a plain request has its own key
    assert upstream.calls() == 3 and field not in upstream.sent()
    await embed()
    assert upstream.calls() == 3


async def test_ollama_embed_fields_reach_ollama_or_are_refused(
    oll: ollama.AsyncClient, upstream: Upstream,
) -> None:
    options: dict[str, Any] = {"num_ctx": 512, "temperature": None}  # null: unset
    call = oll.embed(model="embedding", input=["alpha", "beta"], truncate=False,
                     keep_alive="1h", options=options)
    if upstream.kind == "ollama":
        result = await call
        sent = upstream.sent()
        assert (sent["truncate"], sent["keep_alive"], sent["options"]) == (
            False, "1h", {"num_ctx": 512})
        assert [list(v) for v in result.embeddings] == [embed_vector("alpha", 8),
                                                        embed_vector("beta", 8)]
        return
    with pytest.raises(ollama.ResponseError) as info:
        await call
    assert info.value.status_code == 400
    for field in ("ollama:truncate", "ollama:options.num_ctx", "'openai' (openai)"):
        assert field in info.value.error
    assert "keep_alive" not in info.value.error  # keeping the model loaded asks nothing
    assert "temperature" not in info.value.error
    assert upstream.calls() == 0


@pytest.mark.parametrize(("keep_alive", "refused"), [("5m", False), (0, True), ("0s", True)])
async def test_keep_alive_on_embed_asks_other_kinds_only_to_unload(
    oll: ollama.AsyncClient, upstream: Upstream, keep_alive: str | int, refused: bool,
) -> None:
    call = oll.embed(model="embedding", input="alpha", keep_alive=keep_alive)
    if upstream.kind == "ollama":
        await call
        assert upstream.sent()["keep_alive"] == keep_alive
    elif refused:
        with pytest.raises(ollama.ResponseError) as info:
            await call
        assert info.value.status_code == 400 and "ollama:keep_alive" in info.value.error
    else:
        await call
        assert "keep_alive" not in upstream.sent()


async def test_the_older_embeddings_route_takes_the_same_fields(
    oll: ollama.AsyncClient, upstream: Upstream,
) -> None:
    call = oll.embeddings(model="embedding", prompt="alpha", options={"num_thread": 2})
    if upstream.kind == "ollama":
        result = await call
        assert upstream.sent()["options"] == {"num_thread": 2}
        assert list(result.embedding) == embed_vector("alpha", 8)
        return
    with pytest.raises(ollama.ResponseError) as info:
        await call
    assert info.value.status_code == 400 and "ollama:options.num_thread" in info.value.error


@pytest.mark.parametrize(("extra", "named"), [
    ({"input": "y"}, "input"),  # /api/embed's: passed on, it would replace the prompt
    ({"dimensions": 4}, "dimensions is not supported"),
])
async def test_the_older_route_refuses_what_embed_would_read_otherwise(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
    extra: dict[str, Any], named: str,
) -> None:
    body = {"model": "embedding", "prompt": "x", **extra}
    response = await http.post(f"{app.url}/api/embeddings", json=body)
    assert response.status_code == 400 and named in response.text
    assert upstream.calls() == 0


@pytest.mark.parametrize(("path", "body", "named"), [
    ("/api/embed", {"dimensions": 4}, "dimensions is not supported"),
    ("/v1/embeddings", {"dimensions": 4}, "dimensions is not supported"),
    ("/api/embed", {"options": "fast"}, "options"),
    ("/api/embed", {"keep_alive": "x" * 40}, "keep_alive"),
])
async def test_fields_we_cannot_honour_stay_refused(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
    path: str, body: dict[str, Any], named: str,
) -> None:
    response = await http.post(app.url + path,
                               json={"model": "embedding", "input": "x", **body})
    assert response.status_code == 400 and named in response.text
    assert upstream.calls() == 0


async def test_null_options_are_unset_as_ollama_reads_them(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    # LangChain's OllamaEmbeddings sends every option, most of them null.
    body = {"model": "embedding", "input": "x", "options": {"num_ctx": None, "top_k": None}}
    response = await http.post(f"{app.url}/api/embed", json=body)
    assert response.status_code == 200, response.text
    assert "options" not in upstream.sent()


async def test_a_field_one_candidate_cannot_honour_goes_to_the_next_that_can(
    serve: Serve, openai_server: ServerHandle, ollama_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(compat_settings(("vllm", "openai", openai_server.url),
                                ("ollama", "ollama", ollama_server.url)))
    body = {"model": "embedding", "input": "alpha", "truncate": False}
    response = await http.post(f"{app.url}/api/embed", json=body)
    assert response.status_code == 200, response.text
    assert ollama_server.behaviour.last_request["/api/embed"]["truncate"] is False
    assert "/v1/embeddings" not in openai_server.behaviour.requests
    # ...and a plain request still goes to the first.
    del body["truncate"]
    assert (await http.post(f"{app.url}/api/embed", json=body)).status_code == 200
    assert openai_server.behaviour.requests["/v1/embeddings"] == 1
