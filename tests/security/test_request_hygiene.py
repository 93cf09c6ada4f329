"""Request hygiene: bounded request heads (431), request ids, and access logs that name
the request but never its code, prompt or token."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest

from tests.security.conftest import TOKEN, Serve
from tests.servers.harness import ServerHandle

SECRET_CODE = "def launch_codes(): return 'zebra-42-secret'"


def raw_request(url: str, head: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
            if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                break
        return received


@pytest.mark.parametrize("where", ["one header", "many headers", "url"])
def test_oversized_request_head_is_refused_with_431(serve: Serve, where: str) -> None:
    server = serve(server={"max_header_bytes": 8192})
    if where == "one header":
        head = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n"
    elif where == "many headers":
        head = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
            b"X-H%d: %s\r\n" % (i, b"v" * 60) for i in range(200))
    else:
        head = b"GET /health/live?q=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    answer = raw_request(server.url, head + b"\r\n")
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["type"] == "request_header_fields_too_large"
    assert "8192 bytes" in body["error"]["message"]
    # The server stays healthy, and a head just under the limit is served.
    fits = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 7000 + b"\r\n\r\n"
    assert raw_request(server.url, fits).startswith(b"HTTP/1.1 200 ")
    assert httpx.get(f"{server.url}/health/live").status_code == 200


def test_a_body_arriving_with_the_head_is_not_counted_as_head(serve: Serve) -> None:
    server = serve(server={"max_header_bytes": 4096})
    body = json.dumps({"input": "x" * 50_000}).encode()
    r = httpx.post(f"{server.url}/api/ai/embed", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200


def access_lines(records: list[logging.LogRecord]) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in records if r.name == "mimiverse.access"]


def test_access_log_names_the_request_never_its_content(
    serve: Serve, openai_server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the default level
    server = serve(auth={"tokens": [TOKEN]})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ok = client.post("/api/ai/fim", headers={**auth, "X-Request-Id": "editor-req.42"},
                         json={"prefix": SECRET_CODE, "suffix": "\n"})
        assert ok.headers["x-request-id"] == "editor-req.42"
        # A failing backend's answer is logged without the prompt either.
        openai_server.behaviour.mode = "fail"
        failed = client.post("/api/ai/chat", headers=auth,
                             json={"messages": [{"role": "user", "content": SECRET_CODE}]})
        assert failed.status_code == 503
        # A request id that is not a sane token is replaced, not echoed into logs.
        odd = client.get("/api/models/available",
                         headers={**auth, "X-Request-Id": "bad id; <script>"})
        unauthorized = client.get("/api/models/available", headers={"Authorization": "Bearer no"})
    # A line is written once its response has gone out: the last may still be on its way.
    deadline = time.monotonic() + 5
    while len(lines := access_lines(caplog.records)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(line["path"], line["route"], line["status"]) for line in lines] == [
        ("/api/ai/fim", "/api/ai/fim", 200), ("/api/ai/chat", "/api/ai/chat", 503),
        ("/api/models/available", "/api/models/available", 200),
        ("/api/models/available", "other", 401),  # refused before any route matched
    ]
    first = lines[0]
    assert first["id"] == "editor-req.42" and first["method"] == "POST"
    assert first["bytes_in"] == len(ok.request.content) and first["bytes_out"] == len(ok.content)
    assert first["client"] == "127.0.0.1" and first["team"] is None
    assert isinstance(first["token"], str) and len(first["token"]) == 12
    assert lines[2]["id"] == odd.headers["x-request-id"] != "bad id"
    assert len(str(lines[2]["id"])) == 16
    assert lines[3]["token"] is None and unauthorized.status_code == 401
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert "zebra-42-secret" not in everything
    assert TOKEN not in everything


def test_prompts_over_the_route_token_limit_are_refused_before_any_backend(
    serve: Serve, openai_server: ServerHandle
) -> None:
    server = serve()  # test routes: max_prompt_tokens 2048 (the default)
    long_text = "word " * 2000  # 10,000 bytes: surely over 2,048 tokens
    with httpx.Client(base_url=server.url, timeout=30) as client:
        chat = client.post("/api/ai/chat", json={"messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": long_text}]})
        raw = client.post("/api/generate", json={"model": "test-model", "prompt": long_text,
                                                 "raw": True, "stream": False})
        openai_chat = client.post("/v1/chat/completions", json={
            "model": "test-model", "messages": [{"role": "user", "content": long_text}]})
        fits = client.post("/api/ai/chat", json={"messages": [
            {"role": "user", "content": "word " * 1600}]})  # 8,000 bytes: may fit
    assert chat.status_code == 400
    assert chat.json()["error"] == {
        "type": "prompt_too_long",
        "message": "the prompt is about 2502 tokens; the chat model 'test-model' takes at "
                   "most 2048 (models.chat.max_prompt_tokens)",
    }
    assert raw.status_code == 400 and "at most 2048" in raw.json()["error"]
    assert openai_chat.status_code == 400
    assert openai_chat.json()["error"]["type"] == "invalid_request_error"
    assert fits.status_code == 200
    assert openai_server.behaviour.requests["/v1/chat/completions"] == 1  # only `fits`
    assert openai_server.behaviour.requests["/v1/completions"] == 0
