"""`mimiverse serve` as a real process of its own (several, for replicas and workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from tests.servers.harness import REPO_ROOT, free_port


class ServeProcess:
    def __init__(self, config: Path, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, log: Path | None = None) -> None:
        self.config, self.args, self.env, self._log = config, args, env, log
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self._log or self.config.with_suffix(f".{self.port}.log")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mimiverse.cli.main", "serve", "--config",
                 str(self.config), "--port", str(self.port), *self.args],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
            )

    def wait_ready(self, within_s: float = 60) -> None:
        """Until /health/live answers. The port was free when chosen; another process on
        the machine may take it first: then it starts again on another (twice at most)."""
        deadline = time.monotonic() + within_s
        retries = 2
        while True:
            try:
                httpx.get(f"{self.url}/health/live", timeout=1, trust_env=False)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None and retries and (
                        "address already in use" in self.output().lower()):
                    retries -= 1
                    self._spawn()
                    continue
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mimiverse serve did not start:\n{self.output()}") from None
                time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(what: str, check: Callable[[], object], within_s: float = 30) -> None:
    """Poll `check()` until it returns a true value (conditions between processes)."""
    deadline = time.monotonic() + within_s
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within_s}s: {what}")
        time.sleep(0.05)
