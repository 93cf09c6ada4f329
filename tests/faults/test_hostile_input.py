"""Oversized and malformed request bodies: each gets its own 4xx saying what is wrong,
nothing reaches the backend, and the server stays healthy afterwards."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import Serve
from tests.servers.behaviour import beyond_probes
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for

JSON = {"content-type": "application/json"}
NESTED = b'{"prefix": "x", "stop": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"x" * (8 * 1024 * 1024 + 1), 413, "larger than 8388608 bytes"),
        (b'{"prefix": "x",', 422, "JSON decode error"),
        (b'{"prefix": "x", "max_tokens": -1}', 422, "max_tokens: "),
        (b'{"prefix": "x", "temperature": NaN}', 422, "temperature: "),
        (b'{"prefix": "x", "temperature": 1e309}', 422, "temperature: "),
        (b'{"prefix": "x", "max_tokens": 1e309}', 422, "max_tokens: "),
        (b'{"prefix": "x", "max_tokens": 99999999999999999999999}', 422, "max_tokens: "),
        # Invalid UTF-8 and nesting beyond the JSON parser's recursion limit both fail
        # while the body is decoded, before validation.
        (b'{"prefix": "\xff\xfe x"}', 400, "could not be read as JSON"),
        (NESTED, 400, "could not be read as JSON"),
    ],
    ids=["huge", "truncated-json", "negative", "nan", "inf-float", "inf-int", "bigint",
         "broken-utf8", "nested-100k"],
)
async def test_bad_bodies_get_a_4xx_reach_no_backend_and_leave_the_server_healthy(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient,
    body: bytes, status: int, says: str,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    r = await http.post(f"{app.url}/api/ai/fim", content=body, headers=JSON)
    assert r.status_code == status, r.text[:500]
    answer = r.json()
    assert says in answer["error"]["message"], answer
    assert beyond_probes(ollama_server.behaviour) == {}
    assert (await http.get(f"{app.url}/health/live")).status_code == 200
    ok = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "still = "})
    assert ok.status_code == 200
