"""Our own FastAPI app served by uvicorn on loopback, from a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mimiverse.app import create_app
from mimiverse.backends.base import Backend
from mimiverse.config import Settings, load_settings
from mimiverse.gateway import Gateway
from mimiverse.server import uvicorn_config
from tests.servers.harness import _bind, _ThreadServer


@dataclass(eq=False)
class AppServer:
    url: str
    gateway: Gateway
    _server: _ThreadServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.exit_now()
            self._thread.join(10)


def serve_app(
    settings: Settings, backends: dict[str, Backend] | None = None, repos: Sequence[str] = (),
    send_buffer: int | None = None,
) -> AppServer:
    """`send_buffer`: SO_SNDBUF of every accepted connection (Linux otherwise grows it to
    megabytes), so a test can fill the path to a client that stops reading."""
    gateway = Gateway(settings, backends)
    app = create_app(settings, gateway, repos=repos)
    sock = _bind("127.0.0.1", 0)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    port = sock.getsockname()[1]
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port, lifespan="on",
                            log_config=None, log_level="warning", loop="asyncio")
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("mimiverse test server did not start")
        time.sleep(0.001)
    return AppServer(f"http://127.0.0.1:{port}", gateway, server, thread)


def settings_for(*backends: tuple[str, str, str], **overrides: Any) -> Settings:
    """Settings whose tasks all route to `backends` = (name, kind, url), in that order."""
    names = [name for name, _, _ in backends]
    timeouts = overrides.pop("timeouts", {})
    return load_settings(
        None,
        backends=[{"name": n, "kind": k, "url": u, "timeouts": timeouts} for n, k, u in backends],
        models={
            "completion": {"model": "test-model", "family": "qwen2.5-coder", "backends": names},
            "chat": {"model": "test-model", "backends": names},
            "embedding": {"model": "test-embed", "backends": names},
        },
        **overrides,
    )
