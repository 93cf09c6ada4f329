"""A fresh `mimiverse serve`: no configuration, no Ollama, the model in the model cache.

The default configuration puts completion and chat on a local Ollama and, behind it,
the embedded llama.cpp with the catalog's default model. Here nothing listens on
Ollama's port and the tiny GGUF lies in the models folder under the default model's
file name, so the embedded backend must answer, and start-up must say so.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (mimiverse[llamacpp])")

from mimiverse.weights.catalog import CATALOG, DEFAULT_MODEL
from tests.servers.harness import free_port
from tests.support.tiny_gguf import write_tiny_gguf


def _ollama_port_is_free() -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", 11434)) != 0


def start(tmp_path: Path, port: int, models: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIVERSE_")}
    env.update(MIMIVERSE_MODELS_DIR=str(models), HF_HUB_OFFLINE="1",
               HF_HUB_CACHE=str(tmp_path / "hub"))
    return subprocess.Popen(
        [sys.executable, "-m", "mimiverse.cli.main", "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def wait_live(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1, trust_env=False)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


@pytest.mark.skipif(not _ollama_port_is_free(), reason="something listens on Ollama's port")
def test_fresh_serve_answers_fim_from_the_embedded_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_gguf(models / CATALOG[DEFAULT_MODEL].filename)
    port = free_port()
    proc = start(tmp_path, port, models)
    try:
        wait_live(proc, port)
        r = httpx.post(f"http://127.0.0.1:{port}/api/ai/fim", trust_env=False, timeout=120,
                       json={"prefix": "def add(a, b):\n    return ", "suffix": "\n",
                             "max_tokens": 8})
        assert r.status_code == 200, r.text
        assert r.json()["backend"] == "embedded-llm"
        root = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False)
        assert root.status_code == 200 and root.headers["content-type"].startswith("text/html")
    finally:
        out = stop(proc)
    assert f"interactive API docs: http://127.0.0.1:{port}/docs" in " ".join(out.split())
    assert (f"completion: qwen2.5-coder:1.5b -> embedded-llm (llamacpp, {DEFAULT_MODEL}); "
            "unreachable: local-ollama") in out
    assert "local-ollama: " in out and "ollama serve" in out


@pytest.mark.skipif(not _ollama_port_is_free(), reason="something listens on Ollama's port")
def test_offline_without_a_model_says_what_to_do_and_search_still_serves(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = start(tmp_path, port, tmp_path / "models")
    try:
        wait_live(proc, port)
        r = httpx.post(f"http://127.0.0.1:{port}/api/ai/fim", trust_env=False, timeout=60,
                       json={"prefix": "def add(a, b):\n    return ", "max_tokens": 8})
        assert r.status_code == 503
        assert f"mimiverse pull {DEFAULT_MODEL}" in r.text
        e = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", trust_env=False, timeout=120,
                       json={"model": "all-MiniLM-L6-v2-int8", "input": ["def add(a, b)"]})
        assert e.status_code == 200, e.text
    finally:
        out = stop(proc)
    assert (f"embedded-llm: {DEFAULT_MODEL} is not downloaded and HF_HUB_OFFLINE is set; "
            f"fix: model {DEFAULT_MODEL} is not downloaded: run `mimiverse pull "
            f"{DEFAULT_MODEL}`") in out
