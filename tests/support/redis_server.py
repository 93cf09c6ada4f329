"""A throwaway real redis-server per test, which a test can kill and restart on its port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.harness import free_port


class RedisServer:
    """redis-server on 127.0.0.1:`port`, no persistence, daemonised with a pidfile."""

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port
        self.pidfile = directory / "redis.pid"
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(self.pidfile),
             "--dir", str(self.directory)],
            check=True, capture_output=True, timeout=10,
        )
        deadline = time.monotonic() + 5
        while not self._pong():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING in 5 s")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL, as a crash would; returns once the port refuses connections."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.pidfile.exists():
            return
        pid = int(self.pidfile.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        # The pid may linger as a zombie nobody reaps; the closed port is what counts.
        deadline = time.monotonic() + 5
        while self._accepts():
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise RuntimeError(f"redis-server pid {pid} still listening after {sig.name}")
            time.sleep(0.01)
        self.pidfile.unlink(missing_ok=True)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        why = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI installs it: a skip there would hide a broken install
        pytest.skip(why)
    server = RedisServer(binary, tmp_path / "redis", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
