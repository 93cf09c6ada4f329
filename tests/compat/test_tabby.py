"""Tabby's API: /v1/completions with `segments` and /v1/health, over real HTTP."""

from __future__ import annotations

import platform

import httpx
import pytest

from mimiverse.fim.templates import TEMPLATES, ContextFile
from tests.compat.conftest import CHAT_MODEL, COMPLETION_MODEL
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer

DECLARATION = "def clamp(value: int, low: int, high: int) -> int:\n    ..."
CHANGED = "LIMIT = 10\n"
OPENED = "from .util import clamp\n"


def tabby_request() -> dict[str, object]:
    return {
        "language": "python",
        "segments": {
            "prefix": "def score(x):\n    return ",
            "suffix": "\n",
            "filepath": "app/score.py",
            "git_url": "https://example.com/team/app.git",
            "declarations": [{"filepath": "app/util.py", "body": DECLARATION}],
            "relevant_snippets_from_changed_files": [
                {"filepath": "app/limits.py", "body": CHANGED, "score": 0.8}],
            "relevant_snippets_from_recently_opened_files": [
                {"filepath": "app/main.py", "body": OPENED, "score": 1}],
            "clipboard": "clamp(",
        },
        "temperature": 0,
        "mode": "standard",
    }


async def test_prompt_shows_the_client_snippets_in_qwen_repository_form(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "clamp(x, 0, LIMIT)"
    r = await http.post(f"{app.url}/v1/completions", json=tabby_request())
    assert r.status_code == 200
    # Golden: declarations, then changed files, then opened files; the file last.
    expected = (
        "<|file_sep|>app/util.py\n" + DECLARATION + "\n"
        "<|file_sep|>app/limits.py\n" + CHANGED + "\n"
        "<|file_sep|>app/main.py\n" + OPENED + "\n"
        "<|file_sep|>app/score.py\n"
        "<|fim_prefix|>def score(x):\n    return <|fim_suffix|>\n<|fim_middle|>"
    )
    assert ollama_server.behaviour.last_request["/api/generate"]["prompt"] == expected
    # The same string the template code renders for that context.
    context = [ContextFile("app/util.py", DECLARATION), ContextFile("app/limits.py", CHANGED),
               ContextFile("app/main.py", OPENED)]
    assert expected == TEMPLATES["qwen2.5-coder"].render(
        "def score(x):\n    return ", "\n", path="app/score.py", context=context)


async def test_answer_is_in_tabby_shape(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "clamp(x, 0, LIMIT)"
    body = await http.post(f"{app.url}/v1/completions", json={
        "language": "python", "segments": {"prefix": "y = "}})
    answer = body.json()
    assert set(answer) == {"id", "choices"}
    assert answer["id"].startswith("cmpl-") and len(answer["id"]) == len("cmpl-") + 36
    assert answer["choices"] == [{"index": 0, "text": "clamp(x, 0, LIMIT)"}]


async def test_crlf_documents_are_completed_as_lf_and_answered_in_crlf(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "a = 1\nb = 2"
    r = await http.post(f"{app.url}/v1/completions", json={
        "segments": {"prefix": "x = 0\r\n", "suffix": "\r\nz = 3\r\n"}})
    sent = ollama_server.behaviour.last_request["/api/generate"]["prompt"]
    assert "\r" not in sent
    assert r.json()["choices"][0]["text"] == "a = 1\r\nb = 2"


async def test_raw_prompt_and_no_index_context(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "done"
    r = await http.post(f"{app.url}/v1/completions", json={
        "segments": {"prefix": "ignored"}, "debug_options": {"raw_prompt": "<raw>"}})
    assert r.json()["choices"][0]["text"] == "done"
    assert ollama_server.behaviour.last_request["/api/generate"]["prompt"] == "<raw>"


@pytest.mark.parametrize(("body", "message"), [
    ({"segments": {"prefix": "x"}, "mode": "next_edit_suggestion"},
     "mode: only mode 'standard' is supported (no next edit suggestions)"),
    ({"segments": {"suffix": "x"}}, "segments.prefix: Field required"),
    ({"segments": {"prefix": "x", "declarations": [{"filepath": "a.py"}]}},
     "segments.declarations.0.body: Field required"),
    # Every field Tabby defines is modelled: any other is refused, naming it.
    ({"segments": {"prefix": "x", "cursor": 3}}, "segments.cursor: Extra inputs are not "
                                                 "permitted"),
    ({"segments": {"prefix": "x"}, "max_tokens": 9}, "max_tokens: Extra inputs are not "
                                                     "permitted"),
    ({"segments": {"prefix": "x"}, "debug_options": {"return_prompt": True}},
     "debug_options.return_prompt: only false is supported: answers carry no debug data"),
    ({"segments": {"prefix": "x"}, "debug_options": {"return_snippets": True}},
     "debug_options.return_snippets: only false is supported: answers carry no debug data"),
])
async def test_bad_requests_are_400(app: AppServer, http: httpx.AsyncClient,
                                    body: dict[str, object], message: str) -> None:
    r = await http.post(f"{app.url}/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["message"] == message


async def test_fields_tabby_defines_that_change_nothing_here_are_taken(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    ollama_server.behaviour.reply = "1"
    request = tabby_request()
    segments = {**request["segments"],  # type: ignore[dict-item]
                "edit_history": {"original_code": "", "edits_diff": "", "current_version": ""}}
    body = {**request, "segments": segments, "user": "dev@example.com", "seed": 3,
            "debug_options": {"return_prompt": False, "return_snippets": False,
                              "disable_retrieval_augmented_code_completion": True}}
    r = await http.post(f"{app.url}/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"] == [{"index": 0, "text": "1"}]
    assert ollama_server.behaviour.last_request["/api/generate"]["options"]["seed"] == 3


async def test_backend_down_is_503(app: AppServer, http: httpx.AsyncClient,
                                   ollama_server: ServerHandle) -> None:
    ollama_server.behaviour.mode = "fail"
    r = await http.post(f"{app.url}/v1/completions", json={"segments": {"prefix": "x"}})
    assert r.status_code == 503 and r.json()["error"]["code"] == "all_backends_failed"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_health_in_tabby_shape(app: AppServer, http: httpx.AsyncClient,
                                     method: str) -> None:
    r = await http.request(method, f"{app.url}/v1/health")
    health = r.json()
    assert set(health) == {"model", "chat_model", "device", "arch", "cpu_info", "cpu_count",
                           "cuda_devices", "version", "webserver"}
    assert (health["model"], health["chat_model"]) == (COMPLETION_MODEL, CHAT_MODEL)
    assert health["arch"] == platform.machine() and health["cpu_count"] >= 1
    assert isinstance(health["cpu_info"], str) and health["cpu_info"]
    assert set(health["version"]) == {"build_date", "build_timestamp", "git_sha",
                                      "git_describe"}
