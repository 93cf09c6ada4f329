"""No SSRF: backends come only from configuration. A URL (or a file path outside the
indexed roots) in any request field never makes the server connect or read anywhere."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.security.conftest import Serve
from tests.servers.harness import ServerHandle, run_in_thread
from tests.servers.openai_server import OpenAIApp


@pytest.fixture
def trap() -> Iterator[ServerHandle]:
    """A live server nobody configured: any request it sees is a request we were led to."""
    with run_in_thread(OpenAIApp()) as handle:
        yield handle


def test_urls_in_request_fields_reach_nothing(
    serve: Serve, openai_server: ServerHandle, trap: ServerHandle
) -> None:
    server = serve()
    url = f"{trap.url}/v1"
    attempts = [
        ("/v1/completions", {"model": url, "prompt": "x", "max_tokens": 4}),
        ("/v1/chat/completions", {"model": url, "messages": [{"role": "user", "content": "x"}]}),
        ("/v1/embeddings", {"model": url, "input": "x"}),
        ("/api/generate", {"model": url, "prompt": "x", "stream": False}),
        ("/api/chat", {"model": url, "messages": [{"role": "user", "content": "x"}],
                       "stream": False}),
        ("/api/embed", {"model": url, "input": "x"}),
        ("/api/show", {"model": url}),
        ("/api/codebase/index", {"path": url}),
        ("/api/codebase/search", {"query": "x", "repo": url}),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, body in attempts:
            r = client.post(path, json=body)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        # Fields that are only text in a prompt stay text: the configured backend gets it.
        r = client.post("/api/ai/fim", json={"prefix": "x = ", "path": f"{trap.url}/a.py"})
        assert r.status_code == 200
        assert client.post("/v1/completions", json={
            "model": "test-model", "prompt": "x", "suffix": url, "max_tokens": 4,
        }).status_code == 200
    assert sum(trap.behaviour.requests.values()) == 0
    assert openai_server.behaviour.requests["/v1/completions"] == 2
