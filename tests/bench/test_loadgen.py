"""bench/loadgen.py decides the benchmarks' budgets: what it reports must be what the
server saw. A loopback HTTP/1.1 server answers with Content-Length or chunked bodies (split
over several writes), refuses some requests with 429, and may close a connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from bench import loadgen


@dataclass
class Server:
    port: int = 0
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    close_after: int = 0  # close each connection after this many answers (0: never)
    refuse_every: int = 0  # answer every n-th request with 429 (0: never)
    announce_close: bool = True  # say "Connection: close" on the last answer


async def _answer(server: Server, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    server.connections += 1
    served = 0
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            server.bodies.append(await reader.readexactly(length))
            n = len(server.bodies)
            served += 1
            last = served == server.close_after
            close = b"connection: close\r\n" if last and server.announce_close else b""
            if server.refuse_every and n % server.refuse_every == 0:
                writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\n"
                             + close + b"\r\nno")
            elif n % 2:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n" + close + b"\r\nhel")
                await writer.drain()
                writer.write(b"lo")
            else:  # chunked, each piece in its own write
                for piece in (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n" + close
                              + b"\r\n", b"3\r\nabc\r", b"\n2;x=1\r\nde\r\n", b"0\r\n", b"\r\n"):
                    writer.write(piece)
                    await writer.drain()
            if last:
                break
    writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    listener = await asyncio.start_server(lambda r, w: _answer(state, r, w), "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state


def _url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


async def test_closed_loop_counts_every_answer_and_numbers_the_bodies(server: Server) -> None:
    report = await loadgen.run(_url(server), "/x", '{"n":', "}", seconds=0.3, connections=3)
    assert report["errors"] == 0
    assert report["requests"] == len(server.bodies) > 3
    assert server.connections == 3
    assert sorted(server.bodies) == sorted(f'{{"n":{i}}}'.encode()
                                           for i in range(1, len(server.bodies) + 1))


async def test_open_loop_sends_the_schedule_and_counts_refusals_apart(server: Server) -> None:
    server.refuse_every = 5
    report = await loadgen.run_open_loop(_url(server), "/x", "{}", None, seconds=0.5,
                                         rate=200, connections=8, drain=2)
    assert report["sent"] == 100 == len(server.bodies)
    assert report["refused"] == 20
    assert report["requests"] == 80
    assert report["errors"] == report["unfinished"] == 0
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["max_us"]


async def test_open_loop_moves_on_after_connection_close(server: Server) -> None:
    server.close_after = 7
    report = await loadgen.run_open_loop(_url(server), "/x", "{}", None, seconds=0.5,
                                         rate=100, connections=4, drain=2)
    # "Connection: close" loses nothing: every request is answered, on new connections.
    assert report["sent"] == 50 == len(server.bodies) == report["requests"]
    assert report["errors"] == 0
    assert server.connections >= 50 // 7


async def test_closed_loop_clients_go_on_after_connection_close(server: Server) -> None:
    server.close_after = 3
    report = await loadgen.run(_url(server), "/x", "{}", None, seconds=0.3, connections=2)
    assert report["errors"] == 0
    assert report["requests"] == len(server.bodies) > 6
    assert server.connections >= len(server.bodies) // 3


async def test_a_request_the_server_drops_is_an_error(server: Server) -> None:
    server.close_after, server.announce_close = 2, False
    # Without "Connection: close" the client learns of the close only from the socket.
    report = await loadgen.run_open_loop(_url(server), "/x", "{}", None, seconds=0.2,
                                         rate=50, connections=1, drain=1)
    assert report["sent"] == 10
    assert report["requests"] + report["errors"] == 10
