"""What a client can do below the JSON: leave mid-body, send a request the HTTP parser
refuses, send two Host headers. Raw sockets against our server on loopback."""

from __future__ import annotations

import json
import logging
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.conftest import Serve
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer, settings_for


def _address(app: AppServer) -> tuple[str, int]:
    parts = urlsplit(app.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _exchange(app: AppServer, raw: bytes) -> bytes:
    with socket.create_connection(_address(app), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def _json_body(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    parsed: dict[str, object] = json.loads(body)
    return parsed


def test_a_client_that_leaves_mid_body_is_logged_as_such_not_as_an_error(
    serve: Serve, ollama_server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    app = serve(settings_for(("a", "ollama", ollama_server.url)))
    caplog.set_level(logging.INFO, logger="mimiverse")
    with socket.create_connection(_address(app), timeout=10) as sock:
        sock.sendall(b"POST /api/ai/fim HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                     b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
                     b'{"prefix": "x')
    deadline = time.monotonic() + 30
    while not any(r.name == "mimiverse.access" for r in caplog.records):
        assert time.monotonic() < deadline, "no access line for the request"
        time.sleep(0.01)
    [access] = [json.loads(r.getMessage()) for r in caplog.records
                if r.name == "mimiverse.access"]
    assert access["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("disconnected before its body was complete" in r.getMessage()
               for r in caplog.records)
    metrics = httpx.get(f"{app.url}/metrics").text
    assert not [line for line in metrics.splitlines()
                if line.startswith("mimiverse_http_requests_total") and 'status="5' in line]


@pytest.mark.parametrize("raw", [
    # Content-Length and Transfer-Encoding together: request smuggling's favourite.
    b"POST /api/ai/fim HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 5\r\n"
    b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nbad header line\r\n\r\n",
])
def test_requests_the_parser_refuses_get_our_json_400(
    serve: Serve, ollama_server: ServerHandle, raw: bytes
) -> None:
    app = serve(settings_for(("a", "ollama", ollama_server.url)))
    answer = _exchange(app, raw)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    error = _json_body(answer)["error"]
    assert isinstance(error, dict) and error["type"] == "invalid_request"


@pytest.mark.parametrize("hosts", [(b"127.0.0.1", b"evil.example"),
                                   (b"evil.example", b"127.0.0.1"),
                                   (b"127.0.0.1", b"127.0.0.1")])
def test_two_host_headers_are_a_400_whatever_their_order(
    serve: Serve, ollama_server: ServerHandle, hosts: tuple[bytes, bytes]
) -> None:
    app = serve(settings_for(("a", "ollama", ollama_server.url)))
    answer = _exchange(app, b"GET /health/live HTTP/1.1\r\nhost: " + hosts[0]
                       + b"\r\nhost: " + hosts[1] + b"\r\nconnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    error = _json_body(answer)["error"]
    assert isinstance(error, dict) and error["type"] == "invalid_request"
    assert "more than one Host header" in str(error["message"])
