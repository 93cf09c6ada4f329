"""The app warms its backends up at start, in the background; one that cannot warm up is
logged and the server serves anyway."""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest

from mimiverse.backends.base import Backend
from mimiverse.config import BackendSettings
from mimiverse.errors import BackendUnavailable
from tests.api.conftest import Serve
from tests.support.app_server import settings_for


class Warming(Backend):
    """Records its warm-up; with `fail`, the warm-up raises as a missing model would."""

    kind = "warming"
    tasks = frozenset({"completion", "chat", "embedding"})

    def __init__(self, name: str, *, fail: bool = False) -> None:
        super().__init__(BackendSettings(name=name, kind="openai", url="http://127.0.0.1:9"))
        self.fail = fail
        self.warmed = threading.Event()

    async def warm_up(self) -> None:
        self.warmed.set()
        if self.fail:
            raise BackendUnavailable("GGUF model /nowhere.gguf does not exist", backend=self.name)


async def test_backends_warm_up_at_start_and_a_failure_is_only_logged(
    serve: Serve, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = Warming("good"), Warming("bad", fail=True)
    settings = settings_for(("good", "openai", "http://127.0.0.1:9"),
                            ("bad", "openai", "http://127.0.0.1:9"))
    with caplog.at_level(logging.WARNING, logger="mimiverse.routing"):
        app = serve(settings, {"good": good, "bad": bad})
        for backend in (good, bad):
            assert await asyncio.to_thread(backend.warmed.wait, 5)
        assert (await http.get(f"{app.url}/health/live")).status_code == 200
        for _ in range(100):  # the warning is written just after the warm-ups return
            if caplog.records:
                break
            await asyncio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == [
        "backend bad did not warm up: GGUF model /nowhere.gguf does not exist"
    ]
