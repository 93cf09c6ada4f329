"""One write per answer: the head of a response of known length leaves with its body
(uvicorn writes them apart); a streamed head leaves at once; nothing is ever held back
past the end of its response."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest

from mimiverse.server import OneWritePerAnswer
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer, serve_app, settings_for

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"transfer-encoding: chunked\r\n\r\n")


class Recording(asyncio.Transport):
    """The transport below: what was written, in order, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def wrapped() -> tuple[OneWritePerAnswer, Recording]:
    below = Recording()
    return OneWritePerAnswer(below), below


def test_a_head_of_known_length_leaves_with_its_body() -> None:
    transport, below = wrapped()
    transport.write(HEAD)
    assert below.writes == []
    transport.write(b"{}")
    assert below.writes == [HEAD + b"{}"]
    transport.flush()  # the response completing: nothing left to send
    assert below.writes == [HEAD + b"{}"]


def test_a_streamed_head_and_its_chunks_leave_at_once() -> None:
    transport, below = wrapped()
    transport.write(STREAM_HEAD)
    transport.write(b"5\r\nhello\r\n")
    assert below.writes == [STREAM_HEAD, b"5\r\nhello\r\n"]


def test_a_head_without_a_body_leaves_when_the_response_completes() -> None:
    transport, below = wrapped()  # HEAD, or a body uvicorn never writes
    transport.write(HEAD)
    transport.flush()
    assert below.writes == [HEAD]


def test_closing_sends_what_was_held_first() -> None:
    transport, below = wrapped()
    transport.write(HEAD)
    transport.close()
    assert below.writes == [HEAD] and below.closed


def test_a_whole_response_in_one_write_passes_as_it_is() -> None:
    transport, below = wrapped()  # our 400/431 answers: head and body together
    whole = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    transport.write(whole)
    assert below.writes == [whole]


@pytest.fixture
def server(openai_server: ServerHandle) -> Iterator[AppServer]:
    app = serve_app(settings_for(("upstream", "openai", openai_server.url)))
    yield app
    app.stop()


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer of known length from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"<closed>"
        assert not data.endswith(b"<closed>")
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_answers_on_one_connection_arrive_whole_and_in_order(server: AppServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for method in (b"GET", b"HEAD", b"GET"):
            sock.sendall(method + b" /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if method == b"HEAD":  # a head with a length and no body (a 405): it must not wait
                data = b""
                while b"\r\n\r\n" not in data:
                    data += sock.recv(65536)
                assert data.startswith(b"HTTP/1.1 405 ") and data.endswith(b"\r\n\r\n")
                assert b"\r\ncontent-length: " in data
                continue
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["status"] == "ok"
