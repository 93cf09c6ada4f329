"""Credentials never leave: a backend URL's `user:password@` appears in no answer, health
detail, stream error or log line, and an upstream's error body is summarised, never
echoed. Real loopback servers; the URLs carry credentials of their own."""

from __future__ import annotations

import logging
import socket
import sys

import httpx
import pytest

from mimiverse.config import Settings
from mimiverse.credentials import CredentialFilter, without_credentials
from mimiverse.server import log_config
from tests.api.conftest import Serve
from tests.faults.support import sse_events
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for

PASSWORD = "pw-Sekr3t-0xC0FFEE"


def _with_credentials(url: str) -> str:
    return url.replace("http://", f"http://mimi:{PASSWORD}@", 1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connecting is refused


async def test_unreachable_backend_errors_and_health_hold_no_credentials(
    serve: Serve, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = _with_credentials(f"http://127.0.0.1:{_closed_port()}")
    app = serve(settings_for(("gone", "openai", url)))
    caplog.set_level(logging.DEBUG, logger="mimiverse")
    answers = [
        await http.post(f"{app.url}/api/ai/fim", json={"prefix": "x = "}),
        await http.post(f"{app.url}/v1/chat/completions",
                        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}),
        await http.post(f"{app.url}/api/embed", json={"model": "embedding", "input": ["x"]}),
        await http.get(f"{app.url}/health/ready"),
        await http.get(f"{app.url}/api/models/available"),
        await http.get(f"{app.url}/api/models/loaded"),
    ]
    assert [r.status_code for r in answers[:4]] == [503, 503, 503, 503]
    ready = answers[3].json()
    assert ready["checks"]["backend:gone"]["status"] == "down"
    assert "127.0.0.1" in ready["checks"]["backend:gone"]["detail"]  # the host still shows
    for r in answers:
        assert PASSWORD not in r.text and "mimi:" not in r.text, r.text
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("path", ["/api/ai/fim/stream", "/v1/completions"])
async def test_a_stream_interrupted_error_holds_no_credentials(
    serve: Serve, http: httpx.AsyncClient, openai_server: ServerHandle, path: str
) -> None:
    app = serve(settings_for(("up", "openai", _with_credentials(openai_server.url))))
    openai_server.behaviour.configure(mode="die", after_tokens=2, reply="one two three four")
    body = ({"prefix": "x = "} if path.startswith("/api")
            else {"model": "completion", "prompt": "x = ", "stream": True})
    r = await http.post(f"{app.url}{path}", json=body)
    assert r.status_code == 200
    errors = [e for kind, e in sse_events(r.text) if kind == "error"] if path.startswith(
        "/api") else [line for line in r.text.splitlines() if "error" in line]
    assert errors, r.text
    assert "stream_interrupted" in r.text
    assert PASSWORD not in r.text and "mimi:" not in r.text, r.text


async def test_an_upstream_error_body_is_summarised_not_echoed(
    serve: Serve, http: httpx.AsyncClient, openai_server: ServerHandle
) -> None:
    app = serve(settings_for(("up", "openai", openai_server.url)))
    openai_server.behaviour.configure(mode="fail")  # its body: "test server told to fail"
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "x = "})
    assert r.status_code == 503
    assert "told to fail" not in r.text
    reasons = [b["reason"] for b in r.json()["error"]["backends"]]
    assert reasons == ["HTTP 500 Internal Server Error: server_error"]


def test_without_credentials_removes_every_urls_userinfo() -> None:
    text = ("cannot reach http://u:p@h:1/x, postgres://app:p%40ss@db/app and "
            "redis://:token@cache:6379/0; keep mailto:me@example.com and http://h/a@b")
    assert without_credentials(text) == (
        "cannot reach http://h:1/x, postgres://db/app and redis://cache:6379/0; "
        "keep mailto:me@example.com and http://h/a@b")


def test_every_log_handler_filters_credentials() -> None:
    config = log_config(Settings())
    for name, handler in config["handlers"].items():
        assert handler.get("filters") == ["credentials"], name
    record = logging.LogRecord("mimiverse.x", logging.WARNING, __file__, 1,
                               "backend %s failed", (f"http://a:{PASSWORD}@h:1",), None)
    try:
        raise ConnectionError(f"cannot reach http://a:{PASSWORD}@h:1")
    except ConnectionError:
        record.exc_info = sys.exc_info()
    assert CredentialFilter().filter(record)
    shown = logging.Formatter().format(record)
    assert PASSWORD not in shown and "backend http://h:1 failed" in shown
