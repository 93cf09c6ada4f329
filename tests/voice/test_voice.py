"""Voice over real HTTP: speech made by espeak-ng, sent through our /v1/audio/transcriptions
(by the official OpenAI client) and /api/ai/voice to a loopback speech server, then on
to ask, explain or chat against the echoing chat backend."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from mimiverse.backends.registry import build_backend
from mimiverse.config import Settings, load_settings
from tests.api.conftest import Serve
from tests.api.test_fim import sse_events
from tests.assist.echo import EchoBackend, blocks, wait_indexed
from tests.assist.fixture import make_repo
from tests.servers.harness import ServerHandle, free_port, run_in_thread
from tests.servers.speech_server import SpeechApp
from tests.support.app_server import AppServer

SAID = "where is the cart total computed"

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"),
                                reason="needs Debian's espeak-ng (.ci/run installs it)")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A WAV recording of SAID, spoken by espeak-ng (about two seconds)."""
    path = tmp_path_factory.mktemp("speech") / "said.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SAID], check=True, timeout=60)
    return path.read_bytes()


@pytest.fixture
def speech_server() -> Iterator[ServerHandle]:
    with run_in_thread(SpeechApp(SAID)) as handle:  # type: ignore[arg-type]  # raw ASGI
        yield handle


def voice_settings(*speech_urls: str, **more: Any) -> Settings:
    names = [f"speech{i}" for i in range(len(speech_urls))]
    # The tests' repositories live in temporary folders, which clients may then index.
    more.setdefault("index", {"allowed_roots": [tempfile.gettempdir()]})
    return load_settings(
        None,
        backends=[{"name": "echo", "kind": "openai", "url": "http://127.0.0.1:9"},
                  *({"name": n, "kind": "openai", "url": u}
                    for n, u in zip(names, speech_urls, strict=True))],
        models={
            "completion": {"model": "m", "family": "qwen2.5-coder", "backends": ["echo"]},
            "chat": {"model": "chat-m", "backends": ["echo"], "max_tokens": 4096},
            "embedding": {"model": "bow-64", "backends": ["echo"]},
            **({"transcription": {"model": "whisper-large-v3", "backends": names}}
               if names else {}),
        },
        **more,
    )


def start(serve: Serve, settings: Settings, echo: EchoBackend | None = None) -> AppServer:
    """Our server with the echoing chat backend and real OpenAI backends for speech."""
    speech = {b.name: build_backend(b) for b in settings.backends if b.name != "echo"}
    return serve(settings, {"echo": echo or EchoBackend(), **speech})


def app_of(handle: ServerHandle) -> SpeechApp:
    app = handle.app
    assert isinstance(app, SpeechApp)
    return app


async def test_openai_client_transcribes(
    serve: Serve, speech: bytes, speech_server: ServerHandle, tmp_path: Path
) -> None:
    app = start(serve, voice_settings(speech_server.url))
    client = openai.AsyncOpenAI(base_url=app.url + "/v1", api_key="unused", max_retries=0)
    try:
        wav = tmp_path / "said.wav"
        wav.write_bytes(speech)
        with wav.open("rb") as audio:
            result = await client.audio.transcriptions.create(
                model="whisper-1", file=audio, language="en", prompt="cart")
        assert result.text == SAID
        with wav.open("rb") as audio:
            text = await client.audio.transcriptions.create(
                model="whisper-large-v3", file=audio, response_format="text")
        assert text == SAID + "\n"
    finally:
        await client.close()
    first, second = app_of(speech_server).requests
    assert first == {"model": "whisper-large-v3", "response_format": "verbose_json",
                     "temperature": "0.0", "language": "en", "prompt": "cart",
                     "filename": "said.wav", "content_type": "audio/x-wav",
                     "sha256": hashlib.sha256(speech).hexdigest()}
    assert "language" not in second and second["sha256"] == first["sha256"]


async def test_transcription_refusals(
    serve: Serve, http: httpx.AsyncClient, speech: bytes, speech_server: ServerHandle
) -> None:
    limits = {"max_audio_bytes": 64 * 1024, "max_audio_seconds": 1.5}
    app = start(serve, voice_settings(speech_server.url, voice=limits))
    url = app.url + "/v1/audio/transcriptions"

    async def post(audio: bytes, **fields: str) -> httpx.Response:
        return await http.post(url, files={"file": ("a.wav", audio, "audio/wav")},
                               data={"model": "whisper-1", **fields})

    r = await post(speech)  # ~94 KB
    assert r.status_code == 413 and "voice.max_audio_bytes" in r.json()["error"]["message"]
    half = speech[:44] + speech[44 : 44 + 60_000]  # 60 KB of samples: still 1.36 s
    header = bytearray(half[:44])
    header[40:44] = (60_000).to_bytes(4, "little")  # the data chunk's size
    header[4:8] = (36 + 60_000).to_bytes(4, "little")
    short = bytes(header) + half[44:]
    assert (await post(short)).json() == {"text": SAID}
    limits["max_audio_seconds"] = 1.0
    app = start(serve, voice_settings(speech_server.url, voice=limits))
    r = await http.post(app.url + "/v1/audio/transcriptions",
                        files={"file": ("a.wav", short, "audio/wav")}, data={"model": "whisper-1"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "the audio is 1.4 s long; at most 1 s are taken (voice.max_audio_seconds)")
    for fields, status, text in [
        ({"model": "gpt-4o"}, 404, "does not transcribe here"),
        ({"timestamp_granularities[]": "word"}, 422,
         "timestamp_granularities[]: Extra inputs are not permitted"),
        ({"response_format": "srt"}, 422, "response_format"),
    ]:
        r = await post(short, **fields)
        assert (r.status_code, text in r.json()["error"]["message"]) == (status, True), r.text
    assert len(app_of(speech_server).requests) == 1  # refusals never reach the server


async def test_transcription_needs_a_speech_server_and_falls_back(
    serve: Serve, http: httpx.AsyncClient, speech: bytes, speech_server: ServerHandle
) -> None:
    files = {"file": ("a.wav", speech, "audio/wav")}
    app = start(serve, voice_settings())
    r = await http.post(app.url + "/v1/audio/transcriptions", files=files,
                        data={"model": "whisper-1"})
    assert r.status_code == 409 and "[models.transcription]" in r.json()["error"]["message"]

    down = f"http://127.0.0.1:{free_port()}"
    app = start(serve, voice_settings(down, speech_server.url))
    r = await http.post(app.url + "/v1/audio/transcriptions", files=files,
                        data={"model": "whisper-1"})
    assert r.json() == {"text": SAID}
    app_of(speech_server).status = 500
    r = await http.post(app.url + "/v1/audio/transcriptions", files=files,
                        data={"model": "whisper-1"})
    assert r.status_code == 503
    assert [b["name"] for b in r.json()["error"]["backends"]] == ["speech0", "speech1"]
    assert r.json()["error"]["backends"][1]["reason"].startswith("HTTP 500")


async def test_voice_asks_explains_and_chats(
    serve: Serve, http: httpx.AsyncClient, speech: bytes, speech_server: ServerHandle,
    tmp_path: Path,
) -> None:
    echo = EchoBackend()
    app = start(serve, voice_settings(speech_server.url), echo)
    root = make_repo(tmp_path / "repo").resolve()
    await wait_indexed(root, app.url, http)
    files = {"file": ("said.wav", speech, "audio/wav")}

    r = await http.post(app.url + "/api/ai/voice", files=files)
    body = r.json()
    assert r.status_code == 200 and body["transcript"] == SAID
    asked = (await http.post(app.url + "/api/ai/ask", json={"question": SAID})).json()
    assert body["sources"] == asked["sources"] and body["answer"] == asked["answer"]
    assert body["answer"].endswith(f"Question: {SAID}\n")

    r = await http.post(app.url + "/api/ai/voice", files=files, data={
        "mode": "explain", "path": "src/shop/cart.py", "start_line": "9", "end_line": "9",
        "stream": "true"})
    events = sse_events(r.text)
    assert [k for k, _ in events[:3]] == ["transcript", "sources", "delta"]
    assert events[0][1] == {"text": SAID, "backend": "speech0"}
    answer = "".join(str(d["text"]) for k, d in events if k == "delta")
    assert blocks(answer) == [("src/shop/cart.py", 9, 9), ("src/shop/cart.py", 8, 9),
                              ("src/shop/cart.py", 1, 5), ("src/shop/cart.py", 12, 14)]
    assert answer.endswith(f"(src/shop/cart.py:9-9).\nThe developer asked: {SAID}\n")

    r = await http.post(app.url + "/api/ai/voice", files=files, data={"mode": "chat"})
    assert (r.json()["answer"], r.json()["sources"]) == (f"user: {SAID}\n", [])

    for data, text in [({"mode": "explain"}, "needs path, start_line and end_line"),
                       ({"start_line": "3"}, "go with mode explain"),
                       ({"mode": "chat", "repo": str(root)}, "go with modes ask and explain"),
                       ({"mode": "sing"}, "mode: Input should be"),
                       ({"question": "x"}, "question: Extra inputs are not permitted")]:
        r = await http.post(app.url + "/api/ai/voice", files=files, data=data)
        assert (r.status_code, text in r.json()["error"]["message"]) == (422, True), r.text


def test_transcription_route_needs_openai_speech_servers() -> None:
    from mimiverse.errors import ConfigError

    base: dict[str, Any] = {"name": "m", "kind": "ollama", "url": "http://127.0.0.1:9"}
    for backends, named, why in [([base], "m", "of kind 'ollama'"),
                                 ([], "nowhere", "not a configured backend")]:
        with pytest.raises(ConfigError) as caught:
            load_settings(None, backends=[*backends, {**base, "name": "x"}], models={
                "completion": {"model": "m", "backends": ["x"]},
                "chat": {"model": "m", "backends": ["x"]},
                "embedding": {"model": "m", "backends": ["x"]},
                "transcription": {"model": "w", "backends": [named]}})
        assert f"models.transcription.backends names {named!r}, which is {why}" in str(
            caught.value)
