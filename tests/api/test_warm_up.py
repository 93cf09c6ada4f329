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
from mimiverse.routing.router import Router
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
    settings.models.chat.backends.reverse()  # each comes first somewhere: both warm up
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


class Answering(Warming):
    """Answers its health check unless `down`."""

    def __init__(self, name: str, *, down: bool = False) -> None:
        super().__init__(name)
        self.down = down

    async def check_health(self) -> None:
        if self.down:
            raise BackendUnavailable("connection refused", backend=self.name)


class SlowLoading(Warming):
    """A model that takes until `release` is set to load."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()

    async def warm_up(self) -> None:
        self.warmed.set()
        await asyncio.to_thread(self.release.wait, 10)


@pytest.mark.parametrize("first_down", [False, True])
async def test_a_backend_behind_others_warms_up_only_when_they_do_not_answer(
    first_down: bool,
) -> None:
    first, behind = Answering("first", down=first_down), Warming("behind")
    settings = settings_for(("first", "openai", "http://127.0.0.1:9"),
                            ("behind", "openai", "http://127.0.0.1:9"))
    router = Router(settings, {"first": first, "behind": behind})
    try:
        await router.warm_up()
    finally:
        await router.aclose()
    assert first.warmed.is_set()
    assert behind.warmed.is_set() is first_down


async def test_readiness_says_loading_while_a_model_loads(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    slow = SlowLoading("slow")
    settings = settings_for(("slow", "openai", "http://127.0.0.1:9"))
    app = serve(settings, {"slow": slow})
    try:
        assert await asyncio.to_thread(slow.warmed.wait, 5)
        r = await http.get(f"{app.url}/health/ready")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "degraded"
        assert body["checks"]["backend:slow"] == {
            "status": "loading", "detail": "warming up (fetching or loading its model)"}
    finally:
        slow.release.set()
    for _ in range(500):
        if not app.gateway.router.warming:
            break
        await asyncio.sleep(0.01)
    r = await http.get(f"{app.url}/health/ready")
    assert r.json()["checks"]["backend:slow"] == {"status": "ok", "detail": None}
