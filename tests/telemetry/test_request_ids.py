"""Request ids stay unique when `serve --workers` forks: each worker draws its own prefix."""

from __future__ import annotations

import os

from mimiverse.telemetry import requests


def test_a_forked_worker_makes_ids_of_its_own() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its prefix, exit without running anything else
        os.write(write, requests._ID_PREFIX.encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == len(requests._ID_PREFIX) == 8
    assert child != requests._ID_PREFIX
