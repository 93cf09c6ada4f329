"""Fixtures: a real tritonserver serving the deterministic bag-of-words embedder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tritonserver.server import TritonServer


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One server for a module's tests (starting one costs ~3 s): model `bow`,
    max_batch_size 16. Tests that stop it use `own_triton_server` instead."""
    server = TritonServer(tmp_path_factory.mktemp("triton"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_triton_server(tmp_path: Path) -> Iterator[TritonServer]:
    """A server this test may stop and start again (same ports)."""
    server = TritonServer(tmp_path / "triton")
    server.start()
    try:
        yield server
    finally:
        server.stop()
