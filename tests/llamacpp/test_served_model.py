"""An answer the embedded model gave names that model, not the route's (an Ollama name).

The default configuration's shape: completion on `local-ollama` (nothing listens) and,
behind it, `embedded-llm` running the catalog's 0.5B model, here the tiny GGUF under the
catalog's file name. Over real HTTP: our API, OpenAI's and Ollama's, streamed or not, the
cache, and the metrics.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (mimiverse[llamacpp])")

from mimiverse.config import Settings, load_settings
from mimiverse.gateway import FimInput, Gateway
from mimiverse.weights.catalog import CATALOG, DEFAULT_MODEL
from tests.servers.harness import free_port
from tests.support.app_server import AppServer, serve_app
from tests.support.tiny_gguf import TinyModelInfo

ROUTE_MODEL = "qwen2.5-coder:1.5b"  # what the route (and so the request) is called
PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n"


def default_shape() -> Settings:
    closed = f"http://127.0.0.1:{free_port()}"
    return load_settings(
        None,
        backends=[{"name": "local-ollama", "kind": "ollama", "url": closed},
                  {"name": "embedded-llm", "kind": "llamacpp", "model": DEFAULT_MODEL,
                   "n_ctx": 2048}],
        models={
            "completion": {"model": ROUTE_MODEL, "family": "qwen2.5-coder",
                           "backends": ["local-ollama", "embedded-llm"]},
            "chat": {"model": "qwen3-coder:30b", "backends": ["local-ollama", "embedded-llm"]},
            "embedding": {"model": "test-embed", "backends": ["local-ollama"]},
        },
    )


@pytest.fixture
def server(tiny_gguf: TinyModelInfo, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[AppServer]:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf.path, models / CATALOG[DEFAULT_MODEL].filename)
    monkeypatch.setenv("MIMIVERSE_MODELS_DIR", str(models))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = serve_app(default_shape())
    yield app
    app.stop()


def test_every_protocol_names_the_model_that_answered(server: AppServer) -> None:
    with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as client:
        fim = {"prefix": PREFIX, "suffix": SUFFIX, "max_tokens": 4}
        first = client.post("/api/ai/fim", json=fim).json()
        assert (first["model"], first["backend"], first["cached"]) == (
            DEFAULT_MODEL, "embedded-llm", False)
        again = client.post("/api/ai/fim", json=fim).json()
        assert (again["model"], again["backend"], again["cached"]) == (
            DEFAULT_MODEL, "embedded-llm", True)  # the cache remembers who answered

        events = client.post("/api/ai/fim/stream", json={**fim, "max_tokens": 5}).text
        done = orjson.loads(events.split("event: done\ndata: ", 1)[1].split("\n", 1)[0])
        assert done["model"] == DEFAULT_MODEL

        body = {"model": ROUTE_MODEL, "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 6,
                "temperature": 0}
        openai = client.post("/v1/completions", json=body).json()
        assert openai["model"] == DEFAULT_MODEL
        streamed = client.post("/v1/completions", json={**body, "max_tokens": 7,
                                                         "stream": True}).text
        chunks = [orjson.loads(line[6:]) for line in streamed.splitlines()
                  if line.startswith("data: {")]
        assert len(chunks) >= 2 and {c["model"] for c in chunks} == {DEFAULT_MODEL}

        generate = {"model": ROUTE_MODEL, "prompt": PREFIX, "suffix": SUFFIX,
                    "options": {"num_predict": 8, "temperature": 0}}
        ollama = client.post("/api/generate", json={**generate, "stream": False}).json()
        assert ollama["model"] == DEFAULT_MODEL and ollama["done"] is True
        lines = client.post("/api/generate", json={
            **generate, "options": {"num_predict": 9, "temperature": 0}}).text.splitlines()
        assert len(lines) >= 2 and {orjson.loads(line)["model"] for line in lines} == {
            DEFAULT_MODEL}

        metrics = client.get("/metrics").text
    answered = {
        (s.labels["model"], s.labels["backend"]): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "mimiverse_requests"
        for s in family.samples
        if s.name == "mimiverse_requests_total" and s.labels["task"] == "completion"
        and s.labels["status"] == "ok"
    }
    # Labelled as the answers name their model: the cache hit too (its first giver's).
    assert answered == {(DEFAULT_MODEL, "embedded-llm"): 6, (DEFAULT_MODEL, "cache"): 1}


async def test_requests_and_cache_keys_keep_the_route_name() -> None:
    gateway = Gateway(default_shape())
    try:
        plan = await gateway.plan_fim(FimInput(PREFIX, SUFFIX, max_tokens=4))
    finally:
        await gateway.aclose()
    # What is asked for, and so the cache key, is the route's, whoever answers it.
    assert plan.request.model == ROUTE_MODEL
