"""The embedded Whisper backend over real HTTP: espeak-ng speech sent through our
/v1/audio/transcriptions (by the official OpenAI client) and /api/ai/voice to a tiny
random-weight Whisper made offline (tests/voice/tiny_whisper.py).

Random weights recognise nothing: these tests verify the pipeline (decoding, resampling,
features, generation options, detokenising, routing and fallback), and that the same
audio always gives the same text, not what the text says.
"""

from __future__ import annotations

import re
import shutil
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from mimiverse.backends.speech import TranscriptionRequest
from mimiverse.backends.whisper import UnknownLanguage, WhisperBackend
from mimiverse.config import BackendSettings, Settings, load_settings
from mimiverse.errors import BackendUnavailable, ConfigError
from tests.api.conftest import Serve
from tests.assist.echo import EchoBackend
from tests.servers.harness import ServerHandle, free_port
from tests.support.app_server import AppServer
from tests.voice.test_voice import SAID, app_of, speech, speech_server, voice_settings
from tests.voice.tiny_whisper import make_tiny_whisper

__all__ = ["speech", "speech_server"]  # fixtures shared with test_voice

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"),
                                reason="needs Debian's espeak-ng (.ci/run installs it)")

LETTERS = re.compile(r"[a-z' ]+")  # all the tiny model's vocabulary can spell


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


def whisper_settings(model_path: Path | str, *speech_urls: str, embedded_first: bool = True,
                     **more: Any) -> Settings:
    """voice_settings with an embedded Whisper backend ("whisper") in the route too."""
    settings = voice_settings(*speech_urls, **more)
    whisper = BackendSettings(name="whisper", kind="whisper", model_path=str(model_path))
    servers = [f"speech{i}" for i in range(len(speech_urls))]
    names = ["whisper", *servers] if embedded_first else [*servers, "whisper"]
    data = settings.model_dump()
    data["backends"].append(whisper.model_dump())
    data["models"]["transcription"] = {"model": "whisper-large-v3", "backends": names}
    return load_settings(None, **data)


def start(serve: Serve, settings: Settings) -> AppServer:
    """Our server with the echoing chat backend and real backends for speech."""
    from mimiverse.backends.registry import build_backend

    speech = {b.name: build_backend(b) for b in settings.backends if b.name != "echo"}
    return serve(settings, {"echo": EchoBackend(), **speech})


def recode(wav: bytes, path: Path, fmt: str) -> bytes:
    """The WAV recording written again in another format by libsndfile."""
    import io

    import soundfile

    samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
    soundfile.write(path, samples, rate, format=fmt)
    return path.read_bytes()


def wav_frames(audio: bytes, path: Path) -> tuple[int, int]:
    path.write_bytes(audio)
    with wave.open(str(path)) as recording:
        return recording.getnframes(), recording.getframerate()


async def test_openai_client_transcribes_with_embedded_whisper(
    serve: Serve, speech: bytes, tiny_whisper: Path, tmp_path: Path
) -> None:
    app = start(serve, whisper_settings(tiny_whisper))
    client = openai.AsyncOpenAI(base_url=app.url + "/v1", api_key="unused", max_retries=0)
    wav = tmp_path / "said.wav"
    wav.write_bytes(speech)
    try:
        texts = []
        for _ in range(2):
            with wav.open("rb") as audio:
                texts.append((await client.audio.transcriptions.create(
                    model="whisper-1", file=audio)).text)
        with wav.open("rb") as audio:
            plain = await client.audio.transcriptions.create(
                model="whisper-large-v3", file=audio, response_format="text")
        with wav.open("rb") as audio:
            english = (await client.audio.transcriptions.create(
                model="whisper-1", file=audio, language="en", prompt="cart total")).text
        with wav.open("rb") as audio, pytest.raises(openai.UnprocessableEntityError) as caught:
            await client.audio.transcriptions.create(model="whisper-1", file=audio,
                                                     language="fr")
    finally:
        await client.close()
    assert texts[0] == texts[1] and LETTERS.fullmatch(texts[0])  # same audio, same text
    assert plain == texts[0] + "\n"
    assert LETTERS.fullmatch(english)
    assert "language: 'fr' is not one this Whisper model knows (de, en)" in str(caught.value)


async def test_embedded_whisper_decodes_resamples_and_refuses(
    serve: Serve, http: httpx.AsyncClient, speech: bytes, tiny_whisper: Path, tmp_path: Path
) -> None:
    frames, rate = wav_frames(speech, tmp_path / "said.wav")
    assert rate != 16_000  # espeak-ng speaks at 22050 Hz: the backend resamples
    backend = WhisperBackend(BackendSettings(name="w", kind="whisper",
                                             model_path=str(tiny_whisper)))
    try:
        heard = await backend.transcribe(
            TranscriptionRequest(speech, "said.wav", "audio/wav", "m", language="de"))
        plain = await backend.transcribe(TranscriptionRequest(speech, "a.wav", "audio/wav", "m"))
        # The prompt reaches the decoder: with this seed's weights it changes the answer.
        prompted = await backend.transcribe(
            TranscriptionRequest(speech, "a.wav", "audio/wav", "m", prompt="cart total"))
        sampled = await backend.transcribe(
            TranscriptionRequest(speech, "a.wav", "audio/wav", "m", temperature=0.8))
        recoded = {}
        for suffix, fmt in [("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")]:
            audio = recode(speech, tmp_path / f"said.{suffix}", fmt)
            recoded[suffix] = await backend.transcribe(
                TranscriptionRequest(audio, f"said.{suffix}", f"audio/{suffix}", "m"))
    finally:
        await backend.aclose()
    assert prompted.text != plain.text and "cart" not in prompted.text
    assert LETTERS.fullmatch(sampled.text)
    assert recoded["flac"] == plain  # lossless: the very same samples, the same text
    assert all(LETTERS.fullmatch(t.text) for t in recoded.values())
    assert all(abs((t.duration or 0) - plain.duration) < 0.2 for t in recoded.values())
    assert heard.duration == round(round(frames * 16_000 / rate) / 16_000, 3)
    assert heard.language == "de" and LETTERS.fullmatch(heard.text)

    app = start(serve, whisper_settings(tiny_whisper, voice={"max_audio_seconds": 1.0}))
    url = app.url + "/v1/audio/transcriptions"
    r = await http.post(url, files={"file": ("said.webm", b"\x1aE\xdf\xa3" + bytes(2000),
                                             "audio/webm")}, data={"model": "whisper-1"})
    assert r.status_code == 415
    assert r.json()["error"]["message"] == (
        "file: cannot decode 'webm' audio (audio/webm) for the embedded Whisper model; "
        "send WAV, FLAC, Ogg or MP3")
    r = await http.post(url, files={"file": ("said.wav", speech, "audio/wav")},
                        data={"model": "whisper-1"})
    assert r.status_code == 422  # the length limit holds for the embedded model too
    assert "at most 1 s are taken (voice.max_audio_seconds)" in r.json()["error"]["message"]


async def test_english_only_models_and_long_prompts(
    speech: bytes, tiny_whisper: Path, tmp_path: Path
) -> None:
    english = WhisperBackend(BackendSettings(name="en", kind="whisper", model_path=str(
        make_tiny_whisper(tmp_path / "tiny.en", multilingual=False))))
    multilingual = WhisperBackend(BackendSettings(name="w", kind="whisper",
                                                  model_path=str(tiny_whisper)))
    said = TranscriptionRequest(speech, "a.wav", "audio/wav", "m")
    try:
        plain = await english.transcribe(said)
        told = await english.transcribe(replace(said, language="en"))
        with pytest.raises(UnknownLanguage, match=r"'de' is not one this .* knows \(en\)"):
            await english.transcribe(replace(said, language="de"))
        # ~4,000 characters of prompt (one token each here): the last 31 tokens
        # (max_target_positions 64 // 2 - 1) are kept, as OpenAI's whisper keeps the last
        # 223 of a real model's 448.
        prompt = ("cart total " * 363).strip()
        long = await multilingual.transcribe(replace(said, prompt=prompt))
        tail = await multilingual.transcribe(replace(said, prompt=prompt[-31:]))
    finally:
        await english.aclose()
        await multilingual.aclose()
    assert told == replace(plain, language="en") and LETTERS.fullmatch(plain.text)
    assert long.text == tail.text and LETTERS.fullmatch(long.text)


async def test_long_recordings_go_in_30_second_windows(
    speech: bytes, tiny_whisper: Path, tmp_path: Path
) -> None:
    import numpy as np
    import soundfile

    from mimiverse.backends.whisper import decode_audio

    said = decode_audio(speech, "said.wav", "audio/wav")  # 16 kHz: windows cut exactly
    first = np.resize(said, 30 * 16_000)  # the speech repeated to fill 30 s
    second = said

    def wav(samples: Any) -> bytes:
        path = tmp_path / f"{len(samples)}.wav"
        soundfile.write(path, samples, 16_000, subtype="FLOAT")
        return path.read_bytes()

    backend = WhisperBackend(BackendSettings(name="w", kind="whisper",
                                             model_path=str(tiny_whisper)))
    try:
        texts = [(await backend.transcribe(
            TranscriptionRequest(wav(part), "a.wav", "audio/wav", "m", language="en"))).text
            for part in (first, second, np.concatenate([first, second]))]
    finally:
        await backend.aclose()
    assert all(texts) and texts[2] == f"{texts[0]} {texts[1]}"


async def test_fallback_between_speech_server_and_embedded_whisper(
    serve: Serve, http: httpx.AsyncClient, speech: bytes, speech_server: ServerHandle,
    tiny_whisper: Path, tmp_path: Path,
) -> None:
    files = {"file": ("said.wav", speech, "audio/wav")}
    url = "/v1/audio/transcriptions"
    alone = start(serve, whisper_settings(tiny_whisper))
    embedded = (await http.post(alone.url + url, files=files,
                                data={"model": "whisper-1"})).json()["text"]

    down = f"http://127.0.0.1:{free_port()}"  # a speech server that is not there
    app = start(serve, whisper_settings(tiny_whisper, down, embedded_first=False))
    r = await http.post(app.url + url, files=files, data={"model": "whisper-1"})
    assert r.json() == {"text": embedded}

    missing = tmp_path / "no-model-here"  # an embedded model that cannot load
    app = start(serve, whisper_settings(missing, speech_server.url))
    r = await http.post(app.url + url, files=files, data={"model": "whisper-1"})
    assert r.json() == {"text": SAID}
    assert len(app_of(speech_server).requests) == 1

    # What the embedded model refuses (a language it has no token for) goes on to the server.
    app = start(serve, whisper_settings(tiny_whisper, speech_server.url))
    r = await http.post(app.url + url, files=files, data={"model": "whisper-1",
                                                          "language": "fr"})
    assert r.json() == {"text": SAID}
    assert app_of(speech_server).requests[-1]["language"] == "fr"
    assert len(app_of(speech_server).requests) == 2

    app_of(speech_server).status = 500
    r = await http.post(app.url + url, files=files, data={"model": "whisper-1",
                                                          "language": "fr"})
    assert r.status_code == 503  # a refusal and a failure: both named, not the 422 alone
    reasons = {b["name"]: b["reason"] for b in r.json()["error"]["backends"]}
    assert reasons["whisper"].startswith("language: 'fr' is not one this Whisper model knows")
    assert reasons["speech0"].startswith("HTTP 500")

    app = start(serve, whisper_settings(missing, speech_server.url))
    r = await http.post(app.url + url, files=files, data={"model": "whisper-1"})
    assert r.status_code == 503
    reasons = {b["name"]: b["reason"] for b in r.json()["error"]["backends"]}
    assert reasons["whisper"] == f"model_path {str(missing)!r} is not a folder"


async def test_voice_through_embedded_whisper(
    serve: Serve, http: httpx.AsyncClient, speech: bytes, tiny_whisper: Path
) -> None:
    app = start(serve, whisper_settings(tiny_whisper))
    files = {"file": ("said.wav", speech, "audio/wav")}
    heard = (await http.post(app.url + "/v1/audio/transcriptions", files=files,
                             data={"model": "whisper-1"})).json()["text"]
    r = await http.post(app.url + "/api/ai/voice", files=files, data={"mode": "chat"})
    assert r.status_code == 200, r.text
    assert r.json()["transcript"] == heard
    assert (r.json()["answer"], r.json()["sources"]) == (f"user: {heard}\n", [])


def test_whisper_backends_need_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(whisper\) needs model_path"):
        BackendSettings(name="w", kind="whisper")
    with pytest.raises(ValueError, match="model \\(the llamacpp catalog\\) does not apply"):
        BackendSettings(name="w", kind="whisper", model_path=str(tmp_path), model="x")
    with pytest.raises(ConfigError, match="of kind 'sentence-transformers'"):
        load_settings(None, models={"transcription": {"model": "w", "backends": ["embedded"]}})
    settings = whisper_settings(tmp_path)
    assert settings.models.transcription is not None
    assert settings.models.transcription.backends == ["whisper"]


async def test_missing_model_folder_says_so(tmp_path: Path, speech: bytes) -> None:
    backend = WhisperBackend(BackendSettings(name="w", kind="whisper",
                                             model_path=str(tmp_path / "none")))
    try:
        with pytest.raises(BackendUnavailable, match="is not a folder"):
            await backend.transcribe(TranscriptionRequest(speech, "a.wav", "audio/wav", "m"))
    finally:
        await backend.aclose()


def test_doctor_loads_the_model_or_says_how_to_fix_it(tiny_whisper: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mimiverse.cli.main import app

    config = tmp_path / "mimiverse.toml"
    routes = "".join(f'[models.{task}]\nmodel = "m"\nbackends = ["ollama"]\n'
                     for task in ("completion", "chat", "embedding"))
    config.write_text(f"""{routes}
[[backends]]
name = "ollama"
kind = "ollama"
url = "http://127.0.0.1:{free_port()}"

[[backends]]
name = "whisper-ok"
kind = "whisper"
model_path = "{tiny_whisper}"

[[backends]]
name = "whisper-gone"
kind = "whisper"
model_path = "{tmp_path / 'gone'}"

[models.transcription]
model = "tiny"
backends = ["whisper-ok", "whisper-gone"]
""")
    result = CliRunner().invoke(app, ["doctor", "--config", str(config)],
                                env={"COLUMNS": "400"})
    out = result.stdout
    assert f"ok whisper-ok (whisper, {tiny_whisper}): reachable" in out, out
    gone = tmp_path / "gone"
    assert (f"down whisper-gone (whisper, {gone}): model_path '{gone}' is not a folder\n"
            "   fix: set model_path to a Whisper model folder") in out, out
