"""Every `mimiverse_*` metric that deploy/ names exists on a real /metrics page.

The gateway runs on loopback in front of a loopback Ollama (and a backend that refuses
connections, so a fallback happens), answers a few requests, and is scraped once; the
alert rules and the dashboard may name only series that page offers. This machine has no
GPU, so the app's NVML collector is handed one NVML-shaped GPU (the collector's own
injection point); everything else on the page is the app as it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import mimiverse.app
from mimiverse.telemetry.gpu import GpuCollector
from tests.deploy.deploy_files import (
    alert_rules,
    dashboard_exprs,
    deploy_metric_names,
    exposed_series,
    metric_names,
    sample_value,
)
from tests.deploy.test_grafana import GATEWAY_SERIES
from tests.servers.harness import ServerHandle, free_port
from tests.support.app_server import AppServer, serve_app, settings_for

FIM = {"prefix": "def area(r):\n    return ", "suffix": "\n", "temperature": 0}
GIB = 1024**3


class OneGpu:
    """NVML as `pynvml` shapes it, for a machine with one 80 GiB GPU running one process."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return "GPU-00000000-0000-0000-0000-000000000000"

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        return SimpleNamespace(gpu=42, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        return SimpleNamespace(used=60 * GIB, total=80 * GIB, free=20 * GIB)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return 61

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return 350_000

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return [SimpleNamespace(pid=4242, usedGpuMemory=59 * GIB)]


@pytest.fixture
def app(ollama_server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppServer]:
    monkeypatch.setattr(mimiverse.app, "GpuCollector", lambda: GpuCollector(OneGpu()))
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens: connect is refused
    settings = settings_for(("down", "ollama", refused), ("ollama", "ollama", ollama_server.url))
    server = serve_app(settings)
    yield server
    server.stop()


@pytest.fixture
async def scrape(app: AppServer) -> str:
    async with httpx.AsyncClient(base_url=app.url, timeout=10, trust_env=False) as http:
        for _ in range(2):  # the second is a cache hit
            assert (await http.post("/api/ai/fim", json=FIM)).status_code == 200
        chat = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        assert (await http.post("/api/ai/chat", json=chat)).status_code == 200
        embed = {"input": "def f(): pass"}
        assert (await http.post("/api/ai/embed", json=embed)).status_code == 200
        assert (await http.get("/health/live")).status_code == 200
        page = await http.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    return page.text


def test_every_deploy_metric_is_exposed(scrape: str) -> None:
    exposed = exposed_series(scrape)
    wanted = {n for n in deploy_metric_names() if n.startswith("mimiverse_")}
    assert wanted == GATEWAY_SERIES | {"mimiverse_request_duration_seconds_count"}
    assert wanted - exposed == set(), "named by deploy/ but not on /metrics"


def test_alert_and_dashboard_series_are_checked_one_by_one(scrape: str) -> None:
    """Per file, so a failure says which file names the missing metric."""
    exposed = exposed_series(scrape)
    for rule in alert_rules():
        missing = {n for n in metric_names(rule["expr"]) if n.startswith("mimiverse_")} - exposed
        assert missing == set(), f"alert {rule['alert']}"
    for expr in dashboard_exprs():
        missing = {n for n in metric_names(expr) if n.startswith("mimiverse_")} - exposed
        assert missing == set(), expr


def test_the_requests_made_show_up_as_the_panels_expect(scrape: str) -> None:
    # the repeated deterministic completion was answered by the cache, once
    assert sample_value(scrape, "mimiverse_cache_requests_total", result="hit") == 1
    assert sample_value(
        scrape, "mimiverse_requests_total", task="completion", backend="cache", status="ok"
    ) == 1
    assert sample_value(
        scrape, "mimiverse_requests_total", task="completion", backend="ollama", status="ok"
    ) == 1
    # the first completion skipped the refused backend (the breaker then sits it out)
    assert sample_value(scrape, "mimiverse_fallbacks_total", task="completion", backend="down") == 1
    assert sample_value(scrape, "mimiverse_backend_up", backend="ollama", kind="ollama") == 1
    # histograms the p50/p95 panels read have buckets with the request counted
    assert sample_value(
        scrape, "mimiverse_request_duration_seconds_bucket",
        task="completion", model="test-model", backend="ollama", le="+Inf",
    ) == 1
    assert sample_value(scrape, "mimiverse_gpus") == 1
    # what the GPU memory alert divides: 60 of 80 GiB is 0.75, below its 0.95
    used = sample_value(scrape, "mimiverse_gpu_memory_used_bytes", gpu="0")
    total = sample_value(scrape, "mimiverse_gpu_memory_total_bytes", gpu="0")
    assert (used, total) == (60 * GIB, 80 * GIB)
