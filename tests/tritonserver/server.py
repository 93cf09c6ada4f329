"""A real tritonserver (pytriton's) as a subprocess of the test, which a test can stop and
start again on the same ports.

pytriton pins numpy < 2, so it lives in its own venv (`make install-triton`); without it the
tests skip, except under CI=true where that is a broken install and fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("serve_embedder.py")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxies
READY_WITHIN_S = 90  # ~3 s on an idle 2-core box; much longer when it is busy
STOP_WITHIN_S = 30


def triton_python() -> Path:
    """The pytriton venv's interpreter, or skip (fail under CI) saying how to make it."""
    python = Path(os.environ.get("MIMIVERSE_TRITON_PYTHON", ROOT / ".venv-triton/bin/python"))
    if not python.is_file():
        why = f"no pytriton venv at {python}: run `make install-triton`"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI builds it: a skip there would hide a broken install
        pytest.skip(why)
    return python


class TritonServer:
    """serve_embedder.py on free loopback ports; `calls()` lists the batch sizes it ran."""

    def __init__(self, workdir: Path, *extra: str, model: str = "bow",
                 ready_models: tuple[str, ...] = ()) -> None:
        self.python = triton_python()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.model = model
        self.ready_models = (model, f"{model}-flat", *ready_models)
        self.calls_log = workdir / "calls.log"
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def calls(self) -> list[int]:
        if not self.calls_log.exists():
            return []
        return [int(line) for line in self.calls_log.read_text().split()]

    def start(self) -> None:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 (the child owns it)
        with log:
            self.process = subprocess.Popen(
                [str(self.python), str(SCRIPT), "--http-port", str(self.http_port),
                 "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
                 "--model", self.model, "--calls-log", str(self.calls_log), *self.extra],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True,  # its tritonserver child goes with its group
            )
        deadline = time.monotonic() + READY_WITHIN_S
        while not all(self._ready(m) for m in self.ready_models):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tritonserver did not become ready:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (pytriton stops tritonserver and cleans up), SIGKILL if it hangs;
        returns once the HTTP port refuses connections."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)  # pytriton stops tritonserver itself
        try:
            process.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        # A Python-backend stub can outlive an interrupted tritonserver: end the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_WITHIN_S
        while self._answers():
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                raise RuntimeError("tritonserver still answers after being stopped")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "server.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _ready(self, model: str) -> bool:
        return self._status(f"/v2/models/{model}/ready") == 200

    def _answers(self) -> bool:
        return self._status("/v2/health/live") is not None

    def _status(self, path: str) -> int | None:
        try:
            with _DIRECT.open(self.http_url + path, timeout=1) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None
