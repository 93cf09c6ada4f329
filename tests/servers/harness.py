"""Run a test server in a thread of the test process, or as a process of its own.

In tests:      handle = run_in_thread(OllamaApp()); ...; handle.stop()
In benchmarks: proc = start_process("tests.servers.openai_server"); ...; proc.stop()
               (or by hand: python -m tests.servers.openai_server --port 8001 --delay-s 0.01)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from tests.servers.behaviour import MODES, Behaviour, ProtocolApp

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for processes that must be told a port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _config(app: ProtocolApp, host: str, port: int, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        ws="none",  # no websockets import (and none of its deprecation warnings)
        access_log=False,  # no per-request logging: benchmarks measure the gateway
        log_config=None,  # leave logging to pytest / the caller
        log_level="warning",
        **extra,
    )


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections
    # only for such sockets, and without it Nagle + delayed ACKs add ~40 ms per request on
    # a reused connection.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _ThreadServer(uvicorn.Server):
    """uvicorn.Server that stops as soon as asked: its own main loop polls every 0.1 s,
    which would add that much to every test."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await self.on_tick(0)  # sets the default response headers
        while not self.should_exit:
            await self._wake.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own shutdown sleeps a fixed 0.1 s before waiting for connections; here
        # clients are closed by now and held requests give up on `closing`, so wait only
        # as long as requests are actually running.
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        if self.server_state.tasks:
            await asyncio.wait(list(self.server_state.tasks), timeout=5)
        for task in self.server_state.tasks:
            task.cancel()
        await self.lifespan.shutdown()

    def exit_now(self) -> None:
        self.should_exit = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended by itself
                loop.call_soon_threadsafe(self._wake.set)


@dataclass(eq=False)
class ServerHandle:
    """A server running in a background thread. `stop()` is idempotent."""

    url: str
    app: ProtocolApp
    _server: _ThreadServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def behaviour(self) -> Behaviour:
        return self.app.behaviour

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.app.closing = True  # held (hang / stall) requests return
        self._server.exit_now()
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError(f"test server at {self.url} did not stop")

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_in_thread(app: ProtocolApp, *, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """Serve `app` on host:port (0: any free port) from a daemon thread; return once ready."""
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    # The plain asyncio loop: uvloop buys nothing here and the thread owns its own loop.
    server = _ThreadServer(_config(app, host, port, loop="asyncio"))
    # uvicorn closes the socket on shutdown; it installs no signal handlers off the main thread.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"test-server-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise RuntimeError(f"test server on {host}:{port} did not start")
        time.sleep(0.001)
    return ServerHandle(f"http://{host}:{port}", app, server, thread)


@dataclass(eq=False)
class ProcessHandle:
    """A server running as its own process (benchmarks). Controlled over /_control/*."""

    url: str
    process: subprocess.Popen[bytes] = field(repr=False)

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Set Behaviour fields in the server process (mode, delay_s, reply, ...)."""
        return self._post("/_control/behaviour", fields)

    def reset(self) -> dict[str, Any]:
        return self._post("/_control/reset", {})

    def stats(self) -> dict[str, Any]:
        with httpx.Client(base_url=self.url, trust_env=False) as client:
            result: dict[str, Any] = client.get("/_control/stats").raise_for_status().json()
            return result

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(base_url=self.url, trust_env=False) as client:
            result: dict[str, Any] = client.post(path, json=body).raise_for_status().json()
            return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_process(
    module: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
    startup_s: float = 15.0,
) -> ProcessHandle:
    """Start `python -m <module> --host H --port P [args]` from the repository root and wait
    until it accepts connections. `module`: tests.servers.ollama_server or .openai_server."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", module, "--host", host, "--port", str(port), *args]
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + startup_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                handle = ProcessHandle(f"http://{host}:{port}", process)
                handle.stop()
                raise RuntimeError(f"{module} did not start (exit {process.returncode})") from None
            time.sleep(0.02)
    return ProcessHandle(f"http://{host}:{port}", process)


def cli(
    make_app: Callable[[Behaviour], ProtocolApp],
    argv: Sequence[str] | None = None,
    *,
    description: str,
) -> None:
    """Command line of the server modules: parse flags, serve until SIGINT / SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--delay-s", type=float, default=0.0, help="before each token chunk")
    parser.add_argument("--after-tokens", type=int, default=2)
    parser.add_argument("--reply", default=None, help="answer every prompt with this text")
    parser.add_argument("--embedding-dim", type=int, default=8)
    parser.add_argument("--api-key", default=None)
    opts = parser.parse_args(argv)
    behaviour = Behaviour(
        mode=opts.mode,
        delay_s=opts.delay_s,
        after_tokens=opts.after_tokens,
        reply=opts.reply,
        embedding_dim=opts.embedding_dim,
        api_key=opts.api_key,
    )
    sock = _bind(opts.host, opts.port)
    print(f"http://{opts.host}:{sock.getsockname()[1]}", flush=True)
    # A held (hang / stall) request must not keep SIGTERM from ending the process.
    config = _config(make_app(behaviour), opts.host, sock.getsockname()[1],
                     timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])
