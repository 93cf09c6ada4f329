"""/api/ai/ask and the chat routes' `@codebase` switch, over real HTTP: which sources
enter the prompt, and which are returned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from mimiverse.assist.prompts import SAFETY_TOKENS, source_block
from mimiverse.assist.retrieval import Source
from mimiverse.fim.prompt import conservative_tokens
from mimiverse.index.walker import detect_language
from tests.api.conftest import Serve
from tests.api.test_fim import sse_events
from tests.assist.echo import EchoBackend, blocks, echo_settings, spans, wait_indexed
from tests.assist.fixture import make_repo

QUESTION = "why does the cart total raise KeyError for qty?"
SELECTION = "cart = json.loads(raw, object_hook=check_item)\nreturn total(cart)"
# The selection's names defined in the repository, each a chunk of its own.
DEFINITIONS = [
    {"path": "src/shop/cart.py", "start_line": 17, "end_line": 20, "symbol": "check_item",
     "role": "definition"},
    {"path": "src/shop/cart.py", "start_line": 8, "end_line": 9, "symbol": "total",
     "role": "definition"},
]


async def started(serve: Serve, http: httpx.AsyncClient, tmp_path: Path,
                  chat_prompt_tokens: int = 16384) -> tuple[str, EchoBackend, Path]:
    echo = EchoBackend()
    app = serve(echo_settings(chat_prompt_tokens), {"echo": echo})
    root = make_repo(tmp_path / "repo").resolve()
    await wait_indexed(root, app.url, http)
    return app.url, echo, root


async def search_matches(http: httpx.AsyncClient, url: str, query: str,
                         after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The search API's hybrid top 10 as ask's `match` sources, minus code already shown."""
    r = await http.post(f"{url}/api/codebase/search", json={"query": query, "limit": 10})
    found: list[dict[str, Any]] = []
    for hit in r.json()["results"]:
        if not any(s["path"] == hit["path"] and not (
                s["end_line"] < hit["start_line"] or hit["end_line"] < s["start_line"])
                   for s in [*after, *found]):
            found.append({k: hit[k] for k in ("path", "start_line", "end_line", "symbol")}
                         | {"role": "match"})
    return found


def without_line(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert all(s.pop("line") is None for s in sources)
    return sources


async def test_ask_shows_selection_definitions_then_matches(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, echo, root = await started(serve, http, tmp_path)
    r = await http.post(f"{url}/api/ai/ask", json={
        "question": QUESTION, "selection": SELECTION, "path": str(root / "src/shop/cart.py"),
    })
    assert r.status_code == 200, r.text
    body = r.json()
    [prompt] = echo.prompts
    assert body["answer"] == prompt  # the backend echoes: the answer is its prompt
    assert (body["model"], body["backend"], body["cached"]) == ("chat-m", "echo", False)
    sources = without_line(body["sources"])
    expected = DEFINITIONS + await search_matches(http, url, QUESTION, DEFINITIONS)
    # 2 definitions, then the 10 matches less the one that is check_item's own chunk.
    assert len(expected) == 11 and sources == expected
    assert blocks(prompt) == spans(sources)  # exactly what was returned, in that order
    assert prompt.startswith("system: You answer questions about a code repository.")
    assert f"Selected code (src/shop/cart.py):\n```\n{SELECTION}\n```\n" in prompt
    assert prompt.endswith(f"Question: {QUESTION}\n")
    assert '[1] src/shop/cart.py:17-20 check_item (definition)\n```python\ndef check_item(obj):' \
        in prompt

    # Streamed: the same sources first, then the answer's deltas, then `done`.
    r = await http.post(f"{url}/api/ai/ask", json={
        "question": QUESTION, "selection": SELECTION, "path": "src/shop/cart.py",
        "stream": True,
    })
    events = sse_events(r.text)
    assert [k for k, _ in events[:2]] == ["sources", "delta"] and events[-1][0] == "done"
    assert without_line(events[0][1]["sources"]) == expected  # type: ignore[arg-type]
    text = "".join(str(d["text"]) for k, d in events if k == "delta")
    assert text == prompt and events[-1][1]["cached"] is True  # same prompt: from the cache
    assert len(echo.prompts) == 1


async def test_ask_keeps_the_prompt_within_the_chat_budget(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    budget = 600
    url, echo, _ = await started(serve, http, tmp_path, chat_prompt_tokens=budget)
    r = await http.post(f"{url}/api/ai/ask", json={"question": QUESTION, "selection": SELECTION})
    sources = without_line(r.json()["sources"])
    [prompt] = echo.prompts
    candidates = DEFINITIONS + await search_matches(http, url, QUESTION, DEFINITIONS)
    assert blocks(prompt) == spans(sources)
    assert conservative_tokens(prompt) <= budget
    # In priority order, with those that did not fit left out: each left-out one's code
    # alone would have pushed the prompt over the budget.
    assert [c for c in candidates if c in sources] == sources
    assert sources[:1] == DEFINITIONS[:1] and len(sources) < len(candidates)
    texts = {(s["path"], s["start_line"]): s for s in candidates}
    repo = tmp_path / "repo"
    for left_out in [c for c in candidates if c not in sources]:
        lines = (repo / left_out["path"]).read_text().split("\n")
        code = "\n".join(lines[left_out["start_line"] - 1 : left_out["end_line"]])
        # As the prompt would show it: numbered, with its place and role, fenced.
        block = source_block(len(sources) + 1, Source(
            left_out["path"], left_out["start_line"], left_out["end_line"],
            left_out["symbol"], "match", code, detect_language(left_out["path"])))
        assert conservative_tokens(prompt + block) > budget - SAFETY_TOKENS, texts[
            (left_out["path"], left_out["start_line"])]

    # A question that cannot fit at all is refused, naming the limit.
    r = await http.post(f"{url}/api/ai/ask", json={"question": "why " * 1000})
    assert r.status_code == 400
    assert "models.chat.max_prompt_tokens" in r.json()["error"]["message"]


async def test_ask_errors(serve: Serve, http: httpx.AsyncClient, tmp_path: Path) -> None:
    echo = EchoBackend()
    app = serve(echo_settings(), {"echo": echo})
    r = await http.post(f"{app.url}/api/ai/ask", json={"question": QUESTION})
    assert r.status_code == 409 and "no repository is indexed yet" in r.text
    root = make_repo(tmp_path / "repo").resolve()
    await wait_indexed(root, app.url, http)
    for body, status, text in [
        ({"question": QUESTION, "topk": 3}, 422, "topk: Extra inputs are not permitted"),
        ({"question": ""}, 422, "question: String should have at least 1 character"),
        ({"question": QUESTION, "repo": str(tmp_path)}, 404, "is not indexed here"),
        ({"question": QUESTION, "path": "../etc/passwd"}, 404, "must stay inside"),
        ({"question": QUESTION, "path": "/etc/passwd"}, 404, "is not inside the repository"),
    ]:
        r = await http.post(f"{app.url}/api/ai/ask", json=body)
        assert (r.status_code, text in r.json()["error"]["message"]) == (status, True), r.text
    assert echo.prompts == []


async def test_codebase_switch_in_the_chat_routes(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, echo, _ = await started(serve, http, tmp_path)
    history = [{"role": "system", "content": "be brief"},
               {"role": "user", "content": "hello"},
               {"role": "assistant", "content": "hi"}]
    expected = await search_matches(http, url, "where is the cart total computed", [])
    header = ", ".join(f"{s['path']}:{s['start_line']}-{s['end_line']}" for s in expected)

    r = await http.post(f"{url}/v1/chat/completions", json={
        "model": "chat-m", "messages": [
            *history, {"role": "user", "content": "@codebase where is the cart total computed"}],
    })
    assert r.status_code == 200, r.text
    answer = r.json()["choices"][0]["message"]["content"]
    assert r.headers["x-mimiverse-sources"] == header
    assert blocks(answer) == spans(expected)
    assert answer.startswith("system: You answer questions about a code repository.")
    assert "\nsystem: be brief\nuser: hello\nassistant: hi\nuser: Sources:\n" in answer
    assert answer.endswith("Question: where is the cart total computed\n")

    # Ollama's /api/chat, streamed: the same switch, the same header.
    r = await http.post(f"{url}/api/chat", json={
        "model": "chat-m", "stream": True,
        "messages": [{"role": "user", "content": " @codebase\nwhere is the cart total computed"}],
    })
    assert r.status_code == 200 and r.headers["x-mimiverse-sources"] == header
    assert blocks(echo.prompts[-1]) == spans(expected)

    # Without the switch (or with it elsewhere) the chat is passed on untouched.
    for content in ["where is the cart total computed", "@codebasewhere", "see @codebase x"]:
        r = await http.post(f"{url}/v1/chat/completions", json={
            "model": "chat-m", "messages": [{"role": "user", "content": content}]})
        assert r.json()["choices"][0]["message"]["content"] == f"user: {content}\n"
        assert "x-mimiverse-sources" not in r.headers
    r = await http.post(f"{url}/v1/chat/completions", json={
        "model": "chat-m", "messages": [{"role": "user", "content": "@codebase  "}]})
    assert r.status_code == 400 and "needs a question" in r.text
