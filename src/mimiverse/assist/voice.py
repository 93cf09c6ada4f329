"""Voice: audio checked against the limits, then transcribed by the `transcription` route's
backends, first that answers: OpenAI-compatible speech servers over HTTP, or an embedded
Whisper model in this process.

An embedded model that cannot take a request as sent (a format it cannot decode, a
language it does not know) refuses it with a 4xx; the next backend is tried all the same,
and the refusal is what the client gets when every backend refused.

Limits come before any upload: size always (413), length wherever the container says it
(WAV, MP3, Ogg, FLAC, MP4/M4A, read by mutagen off the event loop; 422). Formats whose
length cannot be read without decoding (WebM) are held to the size limit alone.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass

import mutagen

from mimiverse.backends.base import Backend
from mimiverse.backends.http import HttpBackend
from mimiverse.backends.speech import Transcript, TranscriptionRequest, transcribe
from mimiverse.backends.whisper import WhisperBackend
from mimiverse.config import Settings
from mimiverse.errors import (
    AllBackendsFailed,
    BackendError,
    InvalidRequest,
    ModelNotFound,
    NotReady,
    RequestError,
    Unsupported,
)

# Model names a client may send: OpenAI's own, and our task alias; both mean the route's.
MODEL_ALIASES = frozenset({"whisper-1", "transcription"})


class AudioTooLarge(RequestError):
    status_code = 413


class AudioTooLong(InvalidRequest):
    """422: the recording is longer than `voice.max_audio_seconds`."""


class NoTranscription(NotReady):
    """409: no speech server is configured ([models.transcription])."""


@dataclass(frozen=True, slots=True)
class Heard:
    transcript: Transcript
    model: str
    backend: str
    latency_ms: float


def audio_seconds(audio: bytes) -> float | None:
    """The recording's length from its container, when it tells; else None."""
    try:
        found = mutagen.File(io.BytesIO(audio))
    except mutagen.MutagenError:
        return None
    length = getattr(found.info, "length", None) if found is not None else None
    return float(length) if isinstance(length, int | float) and length > 0 else None


class Transcriber:
    def __init__(self, settings: Settings, backends: Mapping[str, Backend]) -> None:
        self.settings = settings
        self.backends = backends

    def model_for(self, name: str | None) -> str:
        """The route's model for a name a client sent (None: the route's own)."""
        route = self.settings.models.transcription
        if route is None:
            raise NoTranscription("no speech-to-text server is configured: set "
                                  "[models.transcription] to OpenAI-compatible speech servers "
                                  "or embedded Whisper backends")
        if name is None or name in MODEL_ALIASES or name == route.model:
            return route.model
        raise ModelNotFound(f"model {name!r} does not transcribe here; use {route.model!r} "
                            f"(or {', '.join(sorted(MODEL_ALIASES))})")

    async def check(self, audio: bytes) -> None:
        limits = self.settings.voice
        if len(audio) > limits.max_audio_bytes:
            raise AudioTooLarge(f"the audio is {len(audio)} bytes; at most "
                                f"{limits.max_audio_bytes} are taken (voice.max_audio_bytes)")
        if not audio:
            raise InvalidRequest("file: the audio is empty")
        seconds = await asyncio.to_thread(audio_seconds, audio)
        if seconds is not None and seconds > limits.max_audio_seconds:
            raise AudioTooLong(f"the audio is {seconds:.1f} s long; at most "
                               f"{limits.max_audio_seconds:g} s are taken "
                               "(voice.max_audio_seconds)")

    async def hear(self, request: TranscriptionRequest) -> Heard:
        """Check, then transcribe with the route's backends in order (fallback on failure)."""
        model = self.model_for(request.model or None)
        await self.check(request.audio)
        route = self.settings.models.transcription
        assert route is not None
        started = time.perf_counter()
        failures: list[tuple[str, str]] = []
        errors: list[BackendError] = []
        refusals: list[RequestError] = []
        for name in route.backends:
            backend = self.backends[name]
            try:
                heard = await _transcribe_on(backend, _with_model(request, model))
            except BackendError as exc:
                failures.append((name, exc.reason))
                errors.append(exc)
                continue
            except RequestError as exc:  # this backend cannot take it; another may
                failures.append((name, str(exc)))
                refusals.append(exc)
                continue
            took = round((time.perf_counter() - started) * 1000, 2)
            return Heard(heard, model, name, took)
        if refusals and not errors:
            raise refusals[0]
        raise AllBackendsFailed("transcription", failures, errors)


async def _transcribe_on(backend: Backend, request: TranscriptionRequest) -> Transcript:
    if isinstance(backend, WhisperBackend):
        return await backend.transcribe(request)
    if isinstance(backend, HttpBackend):
        return await transcribe(backend, request)
    raise Unsupported(f"{backend.kind} backends do not transcribe", backend=backend.name)


def _with_model(request: TranscriptionRequest, model: str) -> TranscriptionRequest:
    return TranscriptionRequest(request.audio, request.filename, request.content_type, model,
                                request.language, request.prompt, request.temperature)
