"""/api/generate and /v1/completions: every field a client sends is honoured (sent to the
backend in its kind's spelling), translated, or refused with a 400 naming it (and the
backend, where the backend is the limit); never accepted and dropped. Each case: the
client's request -> the body the loopback backend received -> the answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Serve
from tests.compat.conftest import (
    CHAT_MODEL,
    COMPLETION_MODEL,
    QWEN,
    Upstream,
    compat_settings,
    pick_upstream,
)
from tests.compat.test_clients import REPLY, answer_text, fixture
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer
from tests.support.images import png_b64

GENERATE_PATH = {"ollama": "/api/generate", "openai": "/v1/completions"}
PREFIX, SUFFIX = "def mean(xs):\n    return ", "\n"
RAW = QWEN.format(PREFIX, SUFFIX)  # a prompt already in our family's FIM form


@pytest.fixture(params=["ollama", "openai"])
def upstream(request: pytest.FixtureRequest, ollama_server: ServerHandle,
             openai_server: ServerHandle) -> Upstream:
    chosen = pick_upstream(request, ollama_server, openai_server, GENERATE_PATH)
    chosen.server.behaviour.reply = REPLY
    return chosen


@pytest.fixture
def app(serve: Serve, upstream: Upstream) -> AppServer:
    return serve(upstream.settings())


async def post(http: httpx.AsyncClient, app: AppServer, path: str,
               body: dict[str, Any]) -> httpx.Response:
    return await http.post(app.url + path, json={"model": COMPLETION_MODEL, **body})


def error_text(response: httpx.Response) -> str:
    error = response.json()["error"]
    return str(error["message"] if isinstance(error, dict) else error)


# -- sampling: client spelling -> each backend kind's spelling ------------------------------

SAMPLING_OLLAMA = {"top_p": 0.9, "top_k": 20, "min_p": 0.05, "presence_penalty": 0.5,
                   "frequency_penalty": 0.25, "repeat_penalty": 1.1, "seed": 7}
SAMPLING_OPENAI = {"top_p": 0.9, "top_k": 20, "min_p": 0.05, "presence_penalty": 0.5,
                   "frequency_penalty": 0.25, "repetition_penalty": 1.1, "seed": 7}
# What each backend kind receives: Ollama's options, or OpenAI's top-level fields with the
# repeat penalty in vLLM's spelling and llama.cpp server's.
EXPECTED = {"ollama": SAMPLING_OLLAMA, "openai": {**SAMPLING_OLLAMA, "repetition_penalty": 1.1}}


@pytest.mark.parametrize(("path", "body"), [
    ("/api/generate", {"prompt": PREFIX, "suffix": SUFFIX, "stream": False,
                       "options": SAMPLING_OLLAMA}),
    ("/api/generate", {"prompt": RAW, "raw": True, "stream": False,
                       "options": SAMPLING_OLLAMA}),
    ("/v1/completions", {"prompt": PREFIX, "suffix": SUFFIX, **SAMPLING_OPENAI}),
    ("/v1/completions", {"prompt": RAW, "stream": True, **SAMPLING_OPENAI}),
])
async def test_sampling_fields_reach_every_kind_in_its_spelling(
    path: str, body: dict[str, Any], app: AppServer, http: httpx.AsyncClient,
    upstream: Upstream,
) -> None:
    response = await post(http, app, path, body)
    assert response.status_code == 200, response.text
    assert answer_text(response) == REPLY
    sent = upstream.sent()
    got = sent["options"] if upstream.kind == "ollama" else sent
    assert {k: got[k] for k in EXPECTED[upstream.kind]} == EXPECTED[upstream.kind]


# -- Ollama's memory and context fields ----------------------------------------------------

async def test_keep_alive_and_num_ctx_reach_ollama_and_bound_the_prompt_elsewhere(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    long_prefix = "x = 1\n" * 2000  # ~12,000 bytes: more than num_ctx leaves for it
    body = {"prompt": long_prefix, "suffix": SUFFIX, "stream": False, "keep_alive": "1h",
            "options": {"num_ctx": 1024, "num_predict": 64}}
    response = await post(http, app, "/api/generate", body)
    assert response.status_code == 200, response.text
    sent = upstream.sent()
    if upstream.kind == "ollama":
        assert sent["keep_alive"] == "1h" and sent["options"]["num_ctx"] == 1024
    else:
        assert "keep_alive" not in sent and "num_ctx" not in sent
    # Both kinds: the FIM prompt was trimmed so that prompt and answer fit in num_ctx.
    assert len(sent["prompt"]) < 4 * (1024 - 64)
    assert sent["prompt"].endswith(f"<|fim_suffix|>{SUFFIX}<|fim_middle|>")


@pytest.mark.parametrize("unload", [0, "0", "0s", "0.0m"])
async def test_an_unload_is_honoured_by_ollama_and_refused_elsewhere(
    unload: Any, app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"prompt": PREFIX, "suffix": SUFFIX, "stream": False, "keep_alive": unload}
    response = await post(http, app, "/api/generate", body)
    if upstream.kind == "ollama":
        assert response.status_code == 200, response.text
        assert upstream.sent()["keep_alive"] == unload
    else:
        assert response.status_code == 400
        message = error_text(response)
        assert "keep_alive" in message and "'openai' (openai)" in message
        assert upstream.calls() == 0


async def test_a_raw_prompt_over_num_ctx_is_refused_naming_it(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    # ~1,500 tokens: within the route's prompt limit, not within the client's window.
    body = {"prompt": "y" * 6000, "raw": True, "stream": False,
            "options": {"num_ctx": 1024}}
    response = await post(http, app, "/api/generate", body)
    assert response.status_code == 400 and "num_ctx 1024" in error_text(response)
    assert upstream.calls() == 0


# -- fields of the protocol we do not model: to a backend of that protocol, or refused ------

@pytest.mark.parametrize(("path", "body", "own", "named"), [
    ("/api/generate", {"prompt": PREFIX, "stream": False,
                       "options": {"num_gpu": 12, "mirostat": 2}, "logprobs": True},
     "ollama", ["ollama:options.mirostat", "ollama:options.num_gpu", "ollama:logprobs"]),
    ("/v1/completions", {"prompt": PREFIX, "user": "u-1", "logit_bias": {"42": -100}},
     "openai", ["openai:logit_bias", "openai:user"]),
])
async def test_unknown_fields_pass_to_their_own_kind_or_are_refused(
    path: str, body: dict[str, Any], own: str, named: list[str],
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    response = await post(http, app, path, body)
    if upstream.kind != own:
        assert response.status_code == 400
        message = error_text(response)
        assert all(n in message for n in named), message
        assert f"'{upstream.kind}' ({upstream.kind})" in message
        assert upstream.calls() == 0
        return
    assert response.status_code == 200, response.text
    assert answer_text(response) == REPLY
    sent = upstream.sent()
    if own == "ollama":
        assert sent["options"]["num_gpu"] == 12 and sent["options"]["mirostat"] == 2
        assert sent["logprobs"] is True
    else:
        assert sent["user"] == "u-1" and sent["logit_bias"] == {"42": -100}


# -- chat-only and unsupported fields on code completion -----------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("system", "You are terse."), ("format", "json"), ("format", {"type": "object"}),
    ("images", [png_b64()]), ("think", True), ("template", "{{ .Prompt }}"),
    ("context", [1, 2, 3]),
])
async def test_fields_code_completion_cannot_use_are_refused_naming_them(
    field: str, value: Any, app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    response = await post(http, app, "/api/generate",
                          {"prompt": PREFIX, "stream": False, field: value})
    assert response.status_code == 400
    assert error_text(response).startswith(field)
    assert upstream.calls() == 0


async def test_think_off_and_empty_fields_ask_for_nothing(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    body = {"prompt": PREFIX, "stream": False, "think": False, "template": "", "context": [],
            "format": "", "images": []}
    response = await post(http, app, "/api/generate", body)
    assert response.status_code == 200, response.text
    assert answer_text(response) == REPLY


async def test_a_chat_model_on_generate_gets_format_images_and_think(
    app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    image = png_b64()
    body = {"model": CHAT_MODEL, "prompt": "Describe it.", "system": "Be brief.",
            "stream": False, "images": [image], "format": "json", "think": "low",
            "options": {"top_k": 5}}
    response = await http.post(app.url + "/api/generate", json=body)
    assert response.status_code == 200, response.text
    path = "/api/chat" if upstream.kind == "ollama" else "/v1/chat/completions"
    sent = upstream.server.behaviour.last_request[path]
    if upstream.kind == "ollama":
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Describe it.", "images": [image]}]
        assert sent["format"] == "json" and sent["think"] == "low"
        assert sent["options"]["top_k"] == 5
    else:
        assert sent["messages"][1]["content"][-1] == {
            "type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
        assert sent["response_format"] == {"type": "json_object"}
        assert sent["reasoning_effort"] == "low" and sent["top_k"] == 5


# -- bad types: 400 naming the field --------------------------------------------------------

@pytest.mark.parametrize(("path", "body", "named"), [
    ("/api/generate", {"prompt": PREFIX, "options": {"top_k": "many"}}, "top_k"),
    ("/api/generate", {"prompt": PREFIX, "options": {"num_ctx": 0}}, "num_ctx"),
    ("/api/generate", {"prompt": PREFIX, "keep_alive": ["5m"]}, "keep_alive"),
    ("/api/generate", {"prompt": PREFIX, "keep_alive": True}, "not true or false"),
    ("/api/generate", {"prompt": PREFIX, "context": "abc"}, "context"),
    ("/api/generate", {"prompt": PREFIX, "think": "very"}, "think"),
    ("/v1/completions", {"prompt": PREFIX, "top_p": 2}, "top_p"),
    ("/v1/completions", {"prompt": PREFIX, "presence_penalty": "x"}, "presence_penalty"),
    ("/v1/completions", {"prompt": PREFIX, "repetition_penalty": 0}, "repetition_penalty"),
])
async def test_bad_types_are_refused_naming_the_field(
    path: str, body: dict[str, Any], named: str, app: AppServer, http: httpx.AsyncClient,
    upstream: Upstream,
) -> None:
    response = await post(http, app, path, body)
    assert response.status_code == 400
    assert named in response.text
    assert upstream.calls() == 0


# -- the cache key holds what changes an answer ---------------------------------------------

@pytest.mark.parametrize("path", ["/api/generate", "/v1/completions"])
async def test_answer_changing_fields_are_in_the_cache_key(
    path: str, app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    def body(**sampling: Any) -> dict[str, Any]:
        if path == "/api/generate":
            return {"prompt": PREFIX, "suffix": SUFFIX, "stream": False,
                    "options": {"temperature": 0, **sampling}}
        return {"prompt": PREFIX, "suffix": SUFFIX, "temperature": 0, **sampling}

    for sampling in ({}, {"top_k": 5}, {"top_k": 6}, {"top_p": 0.5}, {"top_k": 5}, {}):
        assert (await post(http, app, path, body(**sampling))).status_code == 200
    assert upstream.calls() == 4  # the last two were cache hits
    if path == "/api/generate" and upstream.kind == "ollama":
        for keep in ("1h", "2h"):  # how long the model stays loaded changes no answer
            reply = await post(http, app, path, {**body(), "keep_alive": keep})
            assert reply.status_code == 200
        assert upstream.calls() == 4


async def test_a_field_passed_through_is_keyed_with_its_protocol(
    serve: Serve, http: httpx.AsyncClient, ollama_server: ServerHandle,
    openai_server: ServerHandle,
) -> None:
    """`user` in an Ollama body and in an OpenAI body go to different backends: one
    answer is not the other's cache hit."""
    app = serve(compat_settings(("ollama", "ollama", ollama_server.url),
                                ("openai", "openai", openai_server.url)))
    ollama_server.behaviour.reply = openai_server.behaviour.reply = REPLY
    ollama_body = {"prompt": PREFIX, "suffix": SUFFIX, "stream": False, "user": "u-1",
                   "options": {"temperature": 0, "num_predict": 32}}
    openai_body = {"prompt": PREFIX, "suffix": SUFFIX, "user": "u-1", "temperature": 0,
                   "max_tokens": 32}
    for path, body in (("/api/generate", ollama_body), ("/v1/completions", openai_body)):
        assert (await post(http, app, path, body)).status_code == 200
    assert ollama_server.behaviour.last_request["/api/generate"]["user"] == "u-1"
    assert openai_server.behaviour.last_request["/v1/completions"]["user"] == "u-1"


# -- the recorded client bodies -------------------------------------------------------------

@pytest.mark.parametrize("name", ["continue-ollama-fim", "continue-ollama-raw",
                                  "twinny-ollama-fim", "llm-ls-ollama", "llm-ls-openai",
                                  "continue-openai-completion", "twinny-openai-fim"])
async def test_client_fields_reach_the_backend_whatever_its_kind(
    name: str, app: AppServer, http: httpx.AsyncClient, upstream: Upstream,
) -> None:
    shape = fixture(name)
    response = await http.request(shape["method"], app.url + shape["path"], json=shape["body"])
    assert response.status_code == 200, response.text
    assert answer_text(response) == REPLY
    sent, client = upstream.sent(), shape["body"]
    options = client.get("options", client)
    got = sent["options"] if upstream.kind == "ollama" else sent
    if "top_p" in options:  # llm-ls
        assert got["top_p"] == options["top_p"]
    if upstream.kind == "ollama" and "num_ctx" in options:  # Continue
        assert got["num_ctx"] == options["num_ctx"]
    if upstream.kind == "ollama" and "keep_alive" in client:  # Continue, Twinny
        assert sent["keep_alive"] == client["keep_alive"]
