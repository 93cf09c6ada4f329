"""Per-token limits: a rate limit, a concurrency cap with a bounded queue, 429 with
Retry-After at once when full, health never limited, and slow stream readers dropped."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from tests.security.conftest import OTHER_TOKEN, TOKEN, Serve
from tests.servers.harness import ServerHandle
from tests.support.app_server import serve_app, settings_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_TOKEN}"}


def fim(n: int) -> dict[str, object]:
    # Sampled (temperature > 0) and different: nothing cached, nothing coalesced.
    return {"prefix": f"def f{n}(x):\n    return ", "suffix": "\n", "temperature": 0.5}


def test_rate_limit_per_token_with_retry_after(serve: Serve) -> None:
    server = serve(auth={"tokens": [TOKEN, OTHER_TOKEN]},
                   limits={"requests_per_minute": 60, "burst": 2})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        codes = [client.get("/api/models/available", headers=AUTH).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        refused = client.get("/api/models/available", headers=AUTH)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"  # one request a second refills
        error = refused.json()["error"]
        assert error["type"] == "rate_limited"
        assert "60 requests a minute" in error["message"]
        # Another token has its own bucket; health and metrics are never limited.
        assert client.get("/api/models/available", headers=OTHER_AUTH).status_code == 200
        assert client.get("/health/ready", headers=AUTH).status_code == 200
        assert client.get("/metrics", headers=AUTH).status_code == 200


async def test_concurrency_cap_queues_then_refuses_at_once(
    serve: Serve, openai_server: ServerHandle
) -> None:
    openai_server.behaviour.delay_s = 0.15  # each of the reply's 4 tokens: ~0.6 s a request
    server = serve(limits={"max_concurrent": 2, "max_queue": 2, "queue_timeout_s": 30})
    behaviour = openai_server.behaviour
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        running = [asyncio.create_task(client.post("/api/ai/fim", json=fim(i))) for i in (0, 1)]
        await behaviour.wait_until(lambda b: b.requests["/v1/completions"] == 2)
        queued = [asyncio.create_task(client.post("/api/ai/fim", json=fim(i))) for i in (2, 3)]
        await asyncio.sleep(0)  # let them reach the queue before the next two arrive
        refused = await asyncio.gather(*(client.post("/api/ai/fim", json=fim(i))
                                         for i in (4, 5)))
        # Refused while the first two still run and the next two wait: nothing queued
        # past the bound, nothing sent upstream for them.
        assert behaviour.completed == 0
        assert [r.status_code for r in refused] == [429, 429]
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert refused[0].json()["error"]["type"] == "too_many_requests"
        admitted = await asyncio.gather(*running, *queued)
    assert [r.status_code for r in admitted] == [200, 200, 200, 200]
    assert behaviour.requests["/v1/completions"] == 4


async def test_queue_wait_is_bounded(serve: Serve, openai_server: ServerHandle) -> None:
    openai_server.behaviour.mode = "hang"
    server = serve(limits={"max_concurrent": 1, "max_queue": 1, "queue_timeout_s": 0.2},
                   timeouts={"first_token_s": 5})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        held = asyncio.create_task(client.post("/api/ai/fim", json=fim(0)))
        await openai_server.behaviour.wait_until(lambda b: b.requests["/v1/completions"] == 1)
        # Refused by the queue's timeout (429), not answered by the backend's (504).
        waited = await client.post("/api/ai/fim", json=fim(1))
        assert waited.status_code == 429
        assert "waited 0.2 s" in waited.json()["error"]["message"]
        held.cancel()


def test_slow_stream_reader_is_dropped_and_frees_its_slot(openai_server: ServerHandle) -> None:
    """A client that opens a long stream and stops reading: after the write-idle timeout
    the gateway gives up on it, so its slot (and its upstream) are freed."""
    openai_server.behaviour.reply = (" " * 1000 + "word") * 256  # 1 KB "tokens"
    settings = settings_for(("upstream", "openai", openai_server.url),
                            limits={"max_concurrent": 1, "max_queue": 0},
                            server={"write_idle_timeout_s": 0.5})
    # ~500 KB of events against 8 KB + 4 KB of socket buffers and uvicorn's 64 KB.
    server = serve_app(settings, send_buffer=8192)
    host, port = server.url.removeprefix("http://").split(":")
    body = (b'{"messages": [{"role": "user", "content": "talk"}], "stream": true, '
            b'"temperature": 0.5}')
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall(b"POST /api/ai/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        deadline = time.monotonic() + 5
        while openai_server.behaviour.requests["/v1/chat/completions"] == 0:
            assert time.monotonic() < deadline, "the stream never reached the backend"
            time.sleep(0.005)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # While the stalled stream holds the only slot, others are refused ...
            assert client.post("/api/ai/fim", json=fim(1)).status_code == 429
            # ... until the gateway gives up on the reader that takes nothing.
            deadline = time.monotonic() + 15
            while (status := client.post("/api/ai/fim", json=fim(2)).status_code) == 429:
                assert time.monotonic() < deadline, "the stalled stream kept its slot"
                time.sleep(0.05)
            assert status == 200
        # The stream was cut short: the client never gets the end of it.
        stalled.settimeout(5)
        received = b""
        while chunk := stalled.recv(1 << 16):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 ")
        assert not received.endswith(b"0\r\n\r\n")
    finally:
        stalled.close()
        server.stop()


@pytest.mark.parametrize("field,value", [("max_concurrent", 0), ("max_queue", -1),
                                         ("requests_per_minute", -5)])
def test_limits_are_validated(serve: Serve, field: str, value: int) -> None:
    from mimiverse.config import load_settings
    from mimiverse.errors import ConfigError

    with pytest.raises(ConfigError, match=f"limits.{field}"):
        load_settings(limits={field: value})
