"""`serve --workers N`: N processes answering on one port.

The parent binds and listens once, then forks the workers before anything else runs (no
threads, no event loop, no app yet), so each builds its own app with `create_app` and
accepts on the shared socket: an idle worker picks the next connection up first. Forking
(not multiprocessing's spawn) keeps start-up fast and passes nothing by pickle.

What each worker has of its own: the event loop, backend connection pools, the memory
cache, breakers and balancing state (each learns a failing backend by itself). What
they share: the port, the Redis cache when configured, the index store, and the metrics
(telemetry/multiprocess.py). The parent only watches: a worker that dies is started
again; one that dies within `START_GRACE_S` of starting stops the whole server (its
settings or backends are broken and would only die again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from mimiverse.config import Settings
from mimiverse.server import Server, uvicorn_config
from mimiverse.telemetry import multiprocess

log = logging.getLogger("mimiverse.workers")
START_GRACE_S = 10.0


class WorkerFailed(Exception):
    """A worker exited while starting; the server stopped."""


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_workers(settings: Settings, build_app: Callable[[int], Any], workers: int) -> None:
    """Serve `build_app(i)` from `workers` forked processes (i: the worker's number from
    0; a replacement gets the number of the one it replaces); returns when all have exited
    after SIGINT/SIGTERM; raises WorkerFailed if one could not start."""
    own_metrics_dir = not multiprocess.enabled()
    directory = Path(os.environ[multiprocess.ENV]) if not own_metrics_dir else Path(
        tempfile.mkdtemp(prefix="mimiverse-metrics-"))
    for stale in directory.glob("*.db"):  # a previous run's values must not count again
        stale.unlink()
    multiprocess.use_directory(directory)
    sock = listen(settings.server.host, settings.server.port)
    host, port = sock.getsockname()[:2]
    log.info("serving on http://%s:%d with %d workers", host, port, workers)
    children: dict[int, tuple[int, float]] = {}  # pid -> (its number, when it started)
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        # SIGTERM whatever came: after a terminal's Ctrl-C the workers have their SIGINT
        # already, and a second SIGINT would make uvicorn skip its graceful shutdown.
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:
            _run_worker(sock, settings, lambda: build_app(number))
        children[pid] = (number, time.monotonic())

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed: str | None = None
    try:
        for number in range(workers):
            start(number)
        while children:
            pid, status = os.wait()
            child = children.pop(pid, None)
            if child is None:
                continue
            number, started = child
            multiprocess.worker_exited(pid)
            if stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if time.monotonic() - started < START_GRACE_S:
                failed = f"worker {pid} exited with {code} while starting"
                forward(signal.SIGTERM, None)
                continue
            log.warning("worker %d exited with %d; starting another", pid, code)
            start(number)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        if own_metrics_dir:
            shutil.rmtree(directory, ignore_errors=True)
    if failed:
        raise WorkerFailed(failed)


def _run_worker(sock: socket.socket, settings: Settings, build_app: Callable[[], Any]) -> None:
    """The forked child: build the app, serve until told to stop, never return."""
    code = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own when it runs
        Server(uvicorn_config(build_app(), settings)).run(sockets=[sock])
    except BaseException:  # the child must never fall back into the parent's code
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
