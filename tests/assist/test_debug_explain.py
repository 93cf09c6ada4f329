"""/api/ai/debug and /api/ai/explain over real HTTP: the frames, enclosing definitions,
definitions and callers that enter the prompt, and the sources returned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Serve
from tests.api.test_codebase import wait_ready
from tests.api.test_fim import sse_events
from tests.assist import fixture
from tests.assist.echo import EchoBackend, blocks, echo_settings, spans
from tests.assist.test_ask import started


def frame(path: str, start: int, end: int, symbol: str, line: int) -> dict[str, Any]:
    return {"path": path, "start_line": start, "end_line": end, "symbol": symbol,
            "role": "frame", "line": line}


def source(path: str, start: int, end: int, symbol: str | None, role: str) -> dict[str, Any]:
    return {"path": path, "start_line": start, "end_line": end, "symbol": symbol,
            "role": role, "line": None}


CART_PY, CART_JS, GO, RS = "src/shop/cart.py", "web/cart.js", "cmd/server/main.go", \
    "rust/shop/src/main.rs"
JAVA = "src/main/java/com/shop/"
# Per runtime: the repository's frames, innermost first, each as its enclosing definition;
# library and runtime frames (json/decoder.py, node:internal, /rustc/, java.base) left out.
DEBUG_CASES = {
    "PYTHON": [frame(CART_PY, 17, 20, "check_item", 18),
               frame(CART_PY, 12, 14, "load_and_total", 13),
               frame("src/main.py", 1, 4, "<module>", 3)],
    "NODE": [frame(CART_JS, 1, 3, "lineTotal", 2), frame(CART_JS, 5, 7, "cartTotal", 6),
             frame("web/main.js", 1, 3, "Object.<anonymous>", 2)],
    "GO": [frame(GO, 9, 15, "Cart.Total", 12), frame(GO, 17, 20, "main", 19)],
    "RUST": [frame(RS, 1, 3, "line_total", 2), frame(RS, 5, 7, "cart_total", 6),
             frame(RS, 9, 12, "main", 11)],
    # Java's definitions are its classes while they fit in one piece.
    "JAVA": [frame(JAVA + "Cart.java", 13, 18, "Cart.totalLength", 15),
             frame(JAVA + "Main.java", 4, 10, "Main.main", 8)],
}


@pytest.mark.parametrize("runtime", list(DEBUG_CASES))
async def test_debug_shows_the_frames_code(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path, runtime: str
) -> None:
    url, echo, _ = await started(serve, http, tmp_path)
    trace = getattr(fixture, runtime + "_TRACE")
    r = await http.post(f"{url}/api/ai/debug", json={"error_output": trace})
    assert r.status_code == 200, r.text
    sources = r.json()["sources"]
    assert sources == DEBUG_CASES[runtime]
    [prompt] = echo.prompts
    assert blocks(prompt) == spans(sources)
    assert f"Error output:\n```\n{trace}\n```\n" in prompt
    assert prompt.startswith("system: You are a debugging assistant.")
    assert prompt.endswith("Diagnose the error, then give the fix as a unified diff.\n")
    # Each frame's own line is marked.
    first = DEBUG_CASES[runtime][0]
    line = fixture.FILES[first["path"]].split("\n")[first["line"] - 1]
    assert f"\n> {line}\n" in prompt


async def test_debug_adds_definitions_and_maps_this_checkout(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, _, root = await started(serve, http, tmp_path)
    trace = ("Traceback (most recent call last):\n"
             f'  File "{root}/src/shop/cart.py", line 14, in load_and_total\n'
             "    return total(cart)\n"
             '  File "/usr/lib/python3/dist-packages/shop/cart.py", line 9, in total\n'
             "KeyError: 'items'\n")
    r = await http.post(f"{url}/api/ai/debug", json={"error_output": trace, "stream": True})
    events = sse_events(r.text)
    assert events[0] == ("sources", {"sources": [
        frame(CART_PY, 12, 14, "load_and_total", 14),
        source(CART_PY, 8, 9, "total", "definition"),  # named on the failing line
    ]})
    assert blocks("".join(str(d["text"]) for k, d in events if k == "delta")) == [
        (CART_PY, 12, 14), (CART_PY, 8, 9)]


async def test_debug_without_repository_frames(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    echo = EchoBackend()
    app = serve(echo_settings(), {"echo": echo})
    # Nothing indexed: the error output alone.
    r = await http.post(f"{app.url}/api/ai/debug", json={"error_output": fixture.GO_TRACE})
    assert r.status_code == 200 and r.json()["sources"] == []
    assert "Sources: none found in the index." in echo.prompts[-1]
    r = await http.post(f"{app.url}/api/ai/debug",
                        json={"error_output": "x", "repo": str(tmp_path)})
    assert r.status_code == 404
    for body, field in [({"error_output": ""}, "error_output"),
                        ({"error_output": "x", "lang": "go"}, "lang")]:
        r = await http.post(f"{app.url}/api/ai/debug", json=body)
        assert r.status_code == 422 and r.json()["error"]["message"].startswith(field)


async def test_explain_lines_of_a_file(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, echo, root = await started(serve, http, tmp_path)
    r = await http.post(f"{url}/api/ai/explain",
                        json={"path": "src/shop/cart.py", "start_line": 9, "end_line": 9})
    assert r.status_code == 200, r.text
    assert r.json()["sources"] == [
        source(CART_PY, 9, 9, None, "selection"),
        source(CART_PY, 8, 9, "total", "enclosing"),
        # A name the selection uses (its chunk starts with the file's imports).
        source(CART_PY, 1, 5, "line_total", "definition"),
        source(CART_PY, 12, 14, "load_and_total", "caller"),  # calls total(cart)
    ]
    [prompt] = echo.prompts
    assert blocks(prompt) == [(CART_PY, 9, 9), (CART_PY, 8, 9), (CART_PY, 1, 5),
                              (CART_PY, 12, 14)]
    assert prompt.endswith("Explain the selection [1] (src/shop/cart.py:9-9).\n")

    # By absolute path, streamed; an end past the file's end is clamped.
    r = await http.post(f"{url}/api/ai/explain", json={
        "path": str(root / "web/cart.js"), "start_line": 2, "end_line": 99, "stream": True})
    assert sse_events(r.text)[0][1]["sources"] == [source(CART_JS, 2, 10, None, "selection")]

    # Code sent as text: the definitions of its names, in its language.
    r = await http.post(f"{url}/api/ai/explain",
                        json={"code": "x = line_total(item)", "language": "python"})
    assert r.json()["sources"] == [source(CART_PY, 1, 5, "line_total", "definition")]
    assert "Selected code:\n```python\nx = line_total(item)\n```\n" in echo.prompts[-1]
    r = await http.post(f"{url}/api/ai/explain",
                        json={"code": "x = line_total(item)", "language": "rust"})
    assert r.json()["sources"] == [source(RS, 1, 3, "line_total", "definition")]


async def test_explain_refuses(serve: Serve, http: httpx.AsyncClient, tmp_path: Path) -> None:
    url, echo, root = await started(serve, http, tmp_path)
    (root / ".env").write_text("TOKEN=1\n")  # never indexed: never read
    lines = {"start_line": 1, "end_line": 2}
    for body, status, text in [
        ({"path": ".env", **lines}, 404, "is not an indexed file"),
        ({"path": "../outside.py", **lines}, 404, "must stay inside"),
        ({"path": "/etc/passwd", **lines}, 404, "is not inside the repository"),
        ({"path": "src/main.py", "start_line": 50, "end_line": 60}, 422, "past the end"),
        ({"path": "src/main.py", "start_line": 3, "end_line": 2}, 422, "must not be before"),
        # Lines of a file, or code: one or the other, complete.
        ({"path": "src/main.py", "start_line": 1}, 422, "end_line: Field required"),
        ({"code": "x", "path": "src/main.py", **lines}, 422, "Extra inputs are not permitted"),
        ({"path": "src/main.py", "language": "go", **lines}, 422,
         "language: Extra inputs are not permitted"),
    ]:
        r = await http.post(f"{url}/api/ai/explain", json=body)
        assert (r.status_code, text in r.json()["error"]["message"]) == (status, True), r.text
    assert echo.prompts == []


async def test_explain_refuses_lines_over_the_budget(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, echo, root = await started(serve, http, tmp_path, chat_prompt_tokens=300)
    (root / "src/shop/big.py").write_text("".join(f"x{i} = {i}  # {'-' * 60}\n"
                                                  for i in range(100)))
    await http.post(f"{url}/api/codebase/index", json={"path": str(root)})
    await wait_ready(http, url)
    r = await http.post(f"{url}/api/ai/explain",
                        json={"path": "src/shop/big.py", "start_line": 1, "end_line": 100})
    assert r.status_code == 400 and "explain fewer lines" in r.json()["error"]["message"]
    r = await http.post(f"{url}/api/ai/explain",
                        json={"path": "src/shop/big.py", "start_line": 1, "end_line": 2})
    assert r.status_code == 200 and r.json()["sources"][0]["role"] == "selection"
    assert len(echo.prompts) == 1
