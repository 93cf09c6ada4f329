"""/api/triton/status and /api/triton/metrics, and embeddings over our HTTP API through
Triton, with the server's lifespan running the readiness probe."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from mimiverse.backends.base import Backend
from mimiverse.backends.triton import TritonBackend
from mimiverse.config import Settings, load_settings
from tests.servers.harness import free_port
from tests.support.app_server import AppServer, serve_app
from tests.support.embedder import BowEmbedder
from tests.tritonserver.bow import bow_vector
from tests.tritonserver.server import TritonServer


def settings_with(triton: dict[str, Any] | None) -> Settings:
    backends: list[dict[str, Any]] = [{"name": "fallback", "kind": "openai",
                                       "url": "http://127.0.0.1:9"}]
    embedding = ["fallback"]
    if triton is not None:
        backends.insert(0, {"name": "gpu", "kind": "triton", "health_interval_s": 0.2,
                            "timeouts": {"connect_s": 1.0}, **triton})
        embedding.insert(0, "gpu")
    return load_settings(None, backends=backends, models={
        "embedding": {"model": "bow", "backends": embedding},
        "completion": {"model": "m", "family": "qwen2.5-coder", "backends": ["fallback"]},
        "chat": {"model": "m", "backends": ["fallback"]},
    })


def start(settings: Settings) -> AppServer:
    backends: dict[str, Backend] = {"fallback": BowEmbedder("fallback")}
    for b in settings.backends:
        if b.kind == "triton":
            backends[b.name] = TritonBackend(b)
    return serve_app(settings, backends)


@pytest.fixture
def app(triton_server: TritonServer) -> Iterator[AppServer]:
    server = start(settings_with({"url": triton_server.http_url,
                                  "triton": {"metrics_url": triton_server.metrics_url}}))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        yield client


async def test_status_reports_the_probe_and_the_models_metadata(
    app: AppServer, http: httpx.AsyncClient, triton_server: TritonServer
) -> None:
    body = (await http.get(app.url + "/api/triton/status")).json()
    assert body["healthy"] is True
    assert isinstance(body["lastCheck"], float) and body["latencyMs"] >= 0
    assert {k: body[k] for k in ("backend", "url", "protocol", "model", "error")} == {
        "backend": "gpu", "url": triton_server.http_url, "protocol": "http", "model": "bow",
        "error": None,
    }
    assert body["metadata"]["platform"] == "python"
    assert body["metadata"]["versions"] == ["1"]
    assert body["metadata"]["inputs"] == [{"name": "TEXT", "datatype": "BYTES",
                                           "shape": [-1, 1]}]


async def test_embed_endpoint_answers_from_triton_and_metrics_count_it(
    app: AppServer, http: httpx.AsyncClient
) -> None:
    response = await http.post(app.url + "/api/ai/embed", json={"input": ["def load(path)"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["embeddings"] == [bow_vector("def load(path)").tolist()]
    metrics = await http.get(app.url + "/api/triton/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    success = [line for line in metrics.text.splitlines()
               if line.startswith('nv_inference_request_success{model="bow"')]
    assert len(success) == 1 and float(success[0].rsplit(" ", 1)[1]) >= 1


async def test_metrics_unreachable_is_503_with_the_reason(http: httpx.AsyncClient) -> None:
    metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
    server = start(settings_with({"url": f"http://127.0.0.1:{free_port()}",
                                  "triton": {"metrics_url": metrics_url}}))
    try:
        response = await http.get(server.url + "/api/triton/metrics")
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert message.startswith(f"cannot read Triton's metrics at {metrics_url}: cannot reach")
        status = (await http.get(server.url + "/api/triton/status")).json()
        assert status["healthy"] is False and "cannot reach" in status["error"]
        assert status["metadata"] is None
    finally:
        server.stop()


async def test_no_triton_configured_is_404(http: httpx.AsyncClient) -> None:
    server = start(settings_with(None))
    try:
        for path in ("/api/triton/status", "/api/triton/metrics"):
            response = await http.get(server.url + path)
            assert response.status_code == 404
            assert "no triton backend is configured" in response.json()["error"]["message"]
    finally:
        server.stop()
