"""/api/ai/fim and /api/ai/fim/stream end to end over real HTTP."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.api.conftest import Serve
from tests.servers.behaviour import beyond_probes, default_reply
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for

QWEN = "<|fim_prefix|>{}<|fim_suffix|>{}<|fim_middle|>"


def sse_events(body: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_fim_renders_template_sends_raw_prompt_and_answers(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    r = await http.post(f"{app.url}/api/ai/fim",
                        json={"prefix": "x = ", "suffix": "\n", "max_tokens": 16})
    assert r.status_code == 200
    body = r.json()
    prompt = QWEN.format("x = ", "\n")
    assert body["completion"] == default_reply(prompt)
    assert body["model"] == "test-model"
    assert body["backend"] == "ollama"
    assert body["cached"] is False
    assert isinstance(body["latency"], float) and body["latency"] > 0
    sent = ollama_server.behaviour.last_request["/api/generate"]
    assert sent["prompt"] == prompt
    assert sent["raw"] is True and sent["stream"] is True
    assert sent["options"]["num_predict"] == 16
    assert "<|endoftext|>" in sent["options"]["stop"]


async def test_post_processing_cuts_suffix_overlap_and_stops(
    serve: Serve, openai_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("vllm", "openai", openai_server.url)))
    openai_server.behaviour.reply = "b)\nprint(c)"
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "print(a, ", "suffix": ")\n"})
    assert r.json()["completion"] == "b"
    assert openai_server.behaviour.last_request["/v1/completions"]["prompt"] == QWEN.format(
        "print(a, ", ")\n")


async def test_stream_sends_deltas_then_done(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    ollama_server.behaviour.reply = "total = a + b"
    r = await http.post(f"{app.url}/api/ai/fim/stream", json={"prefix": "    ", "suffix": ""})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"} and len(kinds) > 2
    text = "".join(str(data["text"]) for kind, data in events if kind == "delta")
    done = events[-1][1]
    assert text == done["completion"] == "total = a + b"
    assert done["model"] == "test-model" and done["backend"] == "ollama"
    assert done["cached"] is False


async def test_fallback_serves_from_next_backend_and_reports_it(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url),
                             ("vllm", "openai", openai_server.url)))
    ollama_server.behaviour.mode = "fail"
    r = await http.post(f"{app.url}/api/ai/fim",
                        json={"prefix": "a", "suffix": "", "temperature": 0.5})
    assert r.status_code == 200
    assert r.json()["backend"] == "vllm"
    models = (await http.get(f"{app.url}/api/models/available")).json()["models"]
    first = models["completion"]["backends"][0]
    assert first["name"] == "ollama" and first["last_error"].startswith("HTTP 500")


async def test_all_backends_down_is_503_naming_each(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url),
                             ("vllm", "openai", openai_server.url)))
    ollama_server.behaviour.mode = "reject"
    openai_server.stop()
    for path in ("/api/ai/fim", "/api/ai/fim/stream"):
        r = await http.post(f"{app.url}{path}", json={"prefix": "a"})
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["type"] == "all_backends_failed"
        assert [b["name"] for b in error["backends"]] == ["ollama", "vllm"]
        assert error["backends"][0]["reason"].startswith("HTTP 404")
        assert "cannot reach" in error["backends"][1]["reason"]


async def test_failure_after_first_token_ends_stream_with_error_event(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url),
                             ("vllm", "openai", openai_server.url)))
    ollama_server.behaviour.configure(mode="die", after_tokens=2, reply="abcdefghijklmnop")
    r = await http.post(f"{app.url}/api/ai/fim/stream", json={"prefix": "x"})
    events = sse_events(r.text)
    # Text that reached us before the drop is sent (aiohttp may drop the last buffered
    # chunk); then the error. Never a silent truncation, never a `done`.
    assert [k for k, _ in events][-1] == "error"
    assert {k for k, _ in events[:-1]} == {"delta"} and len(events) >= 2
    sent = "".join(str(d["text"]) for k, d in events if k == "delta")
    assert sent in ("abcd", "abcdefgh")
    error = events[-1][1]["error"]
    assert isinstance(error, dict) and error["type"] == "stream_interrupted"
    # nothing spliced in from another backend
    assert beyond_probes(openai_server.behaviour) == {}


async def test_first_token_timeout_falls_back(
    serve: Serve, ollama_server: ServerHandle, openai_server: ServerHandle,
    http: httpx.AsyncClient,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url),
                             ("vllm", "openai", openai_server.url),
                             timeouts={"first_token_s": 0.2}))
    ollama_server.behaviour.mode = "hang"
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "x", "temperature": 1})
    assert r.json()["backend"] == "vllm"
    await ollama_server.behaviour.wait_until(lambda b: b.cancelled == 1, within_s=1)


async def test_a_stall_mid_stream_ends_it_with_an_error_event(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    # The stream is opened in the request's task and read in the response's own: the
    # between-tokens limit follows whichever task waits.
    app = serve(settings_for(("ollama", "ollama", ollama_server.url),
                             timeouts={"between_tokens_s": 0.2}))
    ollama_server.behaviour.configure(mode="stall", after_tokens=2, reply="abcdefghijkl")
    r = await http.post(f"{app.url}/api/ai/fim/stream", json={"prefix": "x"})
    events = sse_events(r.text)
    assert [k for k, _ in events] == ["delta", "delta", "error"]
    assert "".join(str(d["text"]) for k, d in events if k == "delta") == "abcdefgh"
    assert events[-1][1]["error"] == {"type": "stream_interrupted",
                                      "message": "no token for 0.2s",
                                      "backend": "ollama"}
    await ollama_server.behaviour.wait_until(lambda b: b.cancelled == 1, within_s=1)


@pytest.mark.parametrize("path", ["/api/ai/fim", "/api/ai/fim/stream"])
@pytest.mark.parametrize("mode", ["hang", "stall"])
async def test_client_disconnect_cancels_upstream_within_a_second(
    serve: Serve, ollama_server: ServerHandle, path: str, mode: str
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    ollama_server.behaviour.configure(mode=mode, after_tokens=1)
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("POST", f"{app.url}{path}", json={"prefix": "x"},
                                     timeout=httpx.Timeout(5, read=0.3)) as r:
                async for _ in r.aiter_bytes():
                    pass
    # The client is gone; the upstream request must be cancelled within 1 s.
    await ollama_server.behaviour.wait_until(lambda b: b.cancelled == 1, within_s=1.0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prefix": "x", "max_tokens": 0}, "max_tokens"),
        ({"prefix": "x", "max_tokens": 100_000}, "max_tokens"),
        ({"prefix": "x", "temperature": 2.5}, "temperature"),
        ({"prefix": "x", "stop": ["a"] * 17}, "stop"),
        ({"prefix": "x", "stop": [""]}, "stop.0"),
        ({"prefix": "x" * 1_000_001}, "prefix"),
        ({"suffix": "no prefix"}, "prefix"),
        ({"prefix": "x", "language": "py; rm -rf"}, "language"),
        ({"prefix": 3}, "prefix"),
        ({"prefix": "x", "top_k": 20}, "top_k"),  # unknown here: refused, never dropped
        ({"prefix": "x", "model": "other"}, "model"),
    ],
)
async def test_invalid_fields_get_422_naming_the_field_and_reach_no_backend(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient,
    body: dict[str, object], field: str,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    r = await http.post(f"{app.url}/api/ai/fim", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["message"].startswith(f"{field}: ")
    assert beyond_probes(ollama_server.behaviour) == {}


async def test_oversized_body_is_413_before_reading_it(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    r = await http.post(f"{app.url}/api/ai/fim", content=b"x" * (9 * 1024 * 1024),
                        headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "larger than 8388608 bytes" in r.json()["error"]["message"]

    async def chunks():  # no Content-Length: counted while reading
        for _ in range(10):
            yield b" " * (1024 * 1024)

    r = await http.post(f"{app.url}/api/ai/fim", content=chunks(),
                        headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert beyond_probes(ollama_server.behaviour) == {}


async def test_huge_file_is_trimmed_to_the_prompt_budget(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    prefix = "".join(f"line_{i} = {i}\n" for i in range(50_000))
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": prefix, "suffix": "tail\n"})
    assert r.status_code == 200
    prompt = ollama_server.behaviour.last_request["/api/generate"]["prompt"]
    assert len(prompt) < 2048 * 4
    assert prompt.startswith("<|fim_prefix|>line_")
    assert "line_49999 = 49999\n<|fim_suffix|>" in prompt
