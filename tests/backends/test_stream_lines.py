"""Streamed bodies cut into lines, however the bytes arrive, and SSE events out of them."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from mimiverse.backends.http import MAX_LINE_BYTES, _line_batches
from mimiverse.backends.openai import SseEvents


async def batches_of(pieces: list[bytes]) -> list[list[str]]:
    """What _line_batches yields for a real HTTP body sent in these writes, one by one."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n")
        try:
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.005)  # so the client reads this piece on its own
        except ConnectionError:
            pass  # the client stopped reading (a refused line): nothing more to send
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/") as response:
            return [batch async for batch in _line_batches(response.content)]
    finally:
        server.close()
        await server.wait_closed()


async def test_lines_split_anywhere_come_out_whole() -> None:
    pieces = [b'{"a": ', b'1}\r\n{"b"', b": 2}\n\xc3", b"\xa9\n", b"tail"]
    batches = await batches_of(pieces)
    # How the pieces group into reads is the network's business; the lines are not.
    assert [line for batch in batches for line in batch] == ['{"a": 1}', '{"b": 2}', "é",
                                                            "tail", ""]
    assert all(batches) and batches[-1][-1] == ""


async def test_one_read_with_many_lines_is_one_batch() -> None:
    body = b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    assert await batches_of([body]) == [["data: 1", "", "data: 2", "", "data: [DONE]", ""],
                                        [""]]


async def test_a_line_without_end_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than"):
        await batches_of([b"x" * (MAX_LINE_BYTES + 1)])


@pytest.mark.parametrize(
    ("lines", "events"),
    [
        (["data: {}", ""], [("data", "{}")]),
        (["data:no-space", ""], [("data", "no-space")]),
        (["data: a", "data: b", ""], [("data", "a\nb")]),
        ([": ping", "", "data: x", ""], [("data", "x")]),
        (['error: {"message": "boom"}', ""], [("error", '{"message": "boom"}')]),
        (["event: delta", "id: 7", "data: y", ""], [("data", "y")]),
        (["data: open"], []),  # not ended yet: nothing until the blank line
        (["", "", "data: z", "", ""], [("data", "z")]),
    ],
)
def test_sse_events(lines: list[str], events: list[tuple[str, str]]) -> None:
    assert SseEvents().feed(lines) == events


def test_an_event_split_between_batches_is_joined() -> None:
    parser = SseEvents()
    assert parser.feed(["data: a"]) == []
    assert parser.feed(["data: b", "", "data: c"]) == [("data", "a\nb")]
    assert parser.feed([""]) == [("data", "c")]  # the body's end, as _line_batches ends it
