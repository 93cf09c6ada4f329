"""Speech to text over OpenAI's `/v1/audio/transcriptions` (multipart upload, JSON answer),
as whisper.cpp's server (`--inference-path /v1/audio/transcriptions`), faster-whisper
servers and vLLM serve it. Spoken through an OpenAI-kind backend's pooled client."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from mimiverse.backends.http import HttpBackend
from mimiverse.errors import BackendProtocolError

PATH = "/v1/audio/transcriptions"


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    audio: bytes
    filename: str
    content_type: str
    model: str
    language: str | None = None  # ISO-639-1; None: the server detects it
    prompt: str | None = None  # words to expect (names in the code, say)
    temperature: float = 0.0


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    language: str | None = None
    duration: float | None = None  # seconds, when the server says


async def transcribe(backend: HttpBackend, request: TranscriptionRequest) -> Transcript:
    form = aiohttp.FormData()
    form.add_field("file", request.audio, filename=request.filename,
                   content_type=request.content_type)
    form.add_field("model", request.model)
    # verbose_json also carries the language and duration; every server named above has it.
    form.add_field("response_format", "verbose_json")
    form.add_field("temperature", repr(request.temperature))
    if request.language:
        form.add_field("language", request.language)
    if request.prompt:
        form.add_field("prompt", request.prompt)
    body = await backend.post_form(PATH, form)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise BackendProtocolError(f"{PATH} returned no text", backend=backend.name)
    language = body.get("language")
    duration = body.get("duration")
    return Transcript(
        text.strip(), language if isinstance(language, str) else None,
        float(duration) if isinstance(duration, int | float) else None,
    )
