"""The real llama.cpp server (`python -m llama_cpp.server`) on the tiny model, over HTTP.

One server per module: starting it (~0.7 s) dominates this module's run time.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (mimiverse[llamacpp])")
pytest.importorskip("sse_starlette", reason="llama-cpp-python[server] is not installed")

from mimiverse.backends.base import ChatMessage, ChatRequest, Delta, GenerateRequest
from mimiverse.backends.llamacpp import LlamaCppBackend
from mimiverse.backends.openai import OpenAIBackend
from mimiverse.config import BackendSettings
from tests.llamacpp.conftest import FIM_PROMPT
from tests.support.tiny_gguf import TinyModelInfo

ALIAS = "tiny-coder"
PRINTABLE_ASCII = {chr(c) for c in range(0x20, 0x7F)}
MESSAGES = (ChatMessage("system", "You write Python."), ChatMessage("user", "add two ints"))
# llama_cpp.server defaults repeat_penalty to 1.1; the embedded backend (like llama.cpp's
# own llama-server) uses none. Equal settings must give equal greedy text.
NO_PENALTY = {"repeat_penalty": 1.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(
    tiny_gguf: TinyModelInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of a llama.cpp server serving the tiny model; stopped after the module."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf.path),
        "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
    ]
    # A file, not a pipe: the server logs every request and nobody reads a pipe here.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log_path, timeout_s=30.0)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}):\n{_tail(log)}")
            try:
                if client.get(f"{url}/v1/models").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    pytest.fail(f"llama_cpp.server not ready after {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.fixture
async def client(llama_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=llama_server, trust_env=False, timeout=30) as c:
        yield c


@pytest.fixture
async def openai_backend(llama_server: str) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend(BackendSettings(name="llama-server", kind="openai", url=llama_server))
    yield b
    await b.aclose()


async def complete(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/completions", json={"temperature": 0.0, **fields})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def collect(stream: AsyncIterator[Delta]) -> tuple[str, list[Delta]]:
    deltas = [d async for d in stream]
    return "".join(d.text for d in deltas), deltas


async def test_models_lists_the_alias(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert [m["id"] for m in response.json()["data"]] == [ALIAS]


async def test_fim_completion_equals_the_embedded_backend(
    client: httpx.AsyncClient, backend: LlamaCppBackend
) -> None:
    body = await complete(client, prompt=FIM_PROMPT, max_tokens=32, **NO_PENALTY)
    embedded, deltas = await collect(
        backend.stream_generate(GenerateRequest(model=ALIAS, prompt=FIM_PROMPT, max_tokens=32))
    )
    # Same weights, same tokens (FIM markers parsed as special ids on both sides), greedy:
    # llama.cpp computes the same logits, so the text is the same byte for byte.
    assert body["choices"][0]["text"] == embedded
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == deltas[-1].prompt_tokens
    assert body["usage"]["completion_tokens"] == 32


async def test_default_sampling_greedy_is_deterministic(client: httpx.AsyncClient) -> None:
    first = await complete(client, prompt=FIM_PROMPT, max_tokens=32)
    second = await complete(client, prompt=FIM_PROMPT, max_tokens=32)
    text = first["choices"][0]["text"]
    assert text == second["choices"][0]["text"]
    assert text and set(text) <= PRINTABLE_ASCII


async def test_sse_stream_concatenates_to_the_full_text(client: httpx.AsyncClient) -> None:
    full = await complete(client, prompt=FIM_PROMPT, max_tokens=24)
    fields = {"prompt": FIM_PROMPT, "max_tokens": 24, "temperature": 0.0, "stream": True}
    chunks: list[dict[str, Any]] = []
    done = False
    async with client.stream("POST", "/v1/completions", json=fields) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                break
            chunks.append(orjson.loads(data))
    assert done
    assert len(chunks) > 2
    assert "".join(c["choices"][0]["text"] for c in chunks) == full["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_chat_completion_equals_the_embedded_backend(
    client: httpx.AsyncClient, backend: LlamaCppBackend
) -> None:
    response = await client.post("/v1/chat/completions", json={
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
        "max_tokens": 12, "temperature": 0.0, **NO_PENALTY,
    })
    response.raise_for_status()
    choice = response.json()["choices"][0]
    embedded, _ = await collect(
        backend.stream_chat(ChatRequest(model=ALIAS, messages=MESSAGES, max_tokens=12))
    )
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == embedded
    assert choice["finish_reason"] == "length"


async def test_openai_backend_against_llama_server(
    openai_backend: OpenAIBackend, client: httpx.AsyncClient
) -> None:
    assert await openai_backend.list_models() == [ALIAS]
    await openai_backend.check_health()

    request = GenerateRequest(model=ALIAS, prompt=FIM_PROMPT, max_tokens=20)
    text, deltas = await collect(openai_backend.stream_generate(request))
    again, _ = await collect(openai_backend.stream_generate(request))
    # OpenAIBackend sends only standard fields, so the server's default penalty applies:
    # compare with a raw request made the same way.
    raw = await complete(client, prompt=FIM_PROMPT, max_tokens=20)
    assert text == again == raw["choices"][0]["text"]
    assert len(deltas) > 2  # streamed, not one block
    assert deltas[-1].finish_reason == "length"

    stop = text[8:10]
    stopped, deltas = await collect(
        openai_backend.stream_generate(
            GenerateRequest(model=ALIAS, prompt=FIM_PROMPT, max_tokens=20, stop=(stop,))
        )
    )
    assert stopped == text[: text.index(stop)]
    assert deltas[-1].finish_reason == "stop"


async def test_openai_backend_chat_against_llama_server(openai_backend: OpenAIBackend) -> None:
    request = ChatRequest(model=ALIAS, messages=MESSAGES, max_tokens=10)
    text, deltas = await collect(openai_backend.stream_chat(request))
    again, _ = await collect(openai_backend.stream_chat(request))
    assert text == again
    assert text and set(text) <= PRINTABLE_ASCII
    assert deltas[-1].finish_reason == "length"
