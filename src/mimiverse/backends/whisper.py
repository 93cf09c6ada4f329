"""An embedded Whisper backend (kind = "whisper"): speech to text in this process, with
transformers' WhisperForConditionalGeneration and WhisperProcessor on torch's CPU build.

The model comes from a local folder (`model_path`, as `save_pretrained` or
huggingface_hub's `snapshot_download` leave it), never from a hub: HF_HUB_OFFLINE is set
and every load passes `local_files_only=True`. Loading and decoding run on the backend's
own worker thread; the upload is decoded (libsndfile: WAV, FLAC, Ogg, MP3, ...) and
resampled to 16 kHz mono on a separate thread, so neither stalls the event loop.
Formats libsndfile cannot read (WebM, MP4/M4A) are refused with a 415 naming them.

Whisper reads 30 s windows: longer recordings are cut into windows, each transcribed in
turn, and the texts joined. Everything heavy is imported on first use, so importing this
module costs nothing and a server without the `whisper` extra still starts.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mimiverse.backends.inprocess import LOADING, InProcessBackend
from mimiverse.backends.speech import Transcript, TranscriptionRequest
from mimiverse.config import BackendSettings
from mimiverse.errors import BackendUnavailable, InvalidRequest, RequestError

SAMPLE_RATE = 16_000  # what every Whisper feature extractor reads
WINDOW_SECONDS = 30  # one Whisper input window
INSTALL_HINT = "install mimiverse[whisper]"


class UnsupportedAudio(RequestError):
    """415: the embedded decoder cannot read this format."""

    status_code = 415


class UnknownLanguage(InvalidRequest):
    """422: the model's generation config has no token for the language asked for."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    model: Any  # WhisperForConditionalGeneration
    processor: Any  # WhisperProcessor
    languages: frozenset[str]  # ISO codes the model's generation config knows
    multilingual: bool  # False: an English-only model (`*.en`), told no language
    max_prompt: int  # prompt tokens kept (the last ones), as OpenAI's whisper keeps them


def decode_audio(audio: bytes, filename: str, content_type: str) -> Any:
    """The recording as 16 kHz mono float32 samples (a numpy array)."""
    try:
        import numpy as np
        import soundfile
        from scipy.signal import resample_poly
    except ImportError as exc:
        raise BackendUnavailable(f"embedded Whisper needs soundfile and scipy: {INSTALL_HINT} "
                                 f"({exc})") from exc
    try:
        samples, rate = soundfile.read(io.BytesIO(audio), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        shown = Path(filename).suffix.lstrip(".") or content_type
        raise UnsupportedAudio(
            f"file: cannot decode {shown!r} audio ({content_type}) for the embedded Whisper "
            "model; send WAV, FLAC, Ogg or MP3") from exc
    if not len(samples):
        raise InvalidRequest("file: the audio holds no samples")
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        common = math.gcd(int(rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // common, int(rate) // common)
    return np.ascontiguousarray(mono, dtype=np.float32)


class WhisperBackend(InProcessBackend):
    kind: ClassVar[str] = "whisper"  # serves the transcription route only (no Task)

    def __init__(self, config: BackendSettings) -> None:
        super().__init__(config)
        if not config.model_path:
            raise BackendUnavailable("whisper needs model_path = a model folder",
                                     backend=self.name)
        self.model_path = Path(config.model_path).expanduser()
        self.threads = config.n_threads
        self._loaded: _Loaded | None = None

    def _describe_failure(self, exc: Exception) -> str:
        return f"embedded Whisper failed: {type(exc).__name__}: {exc}"

    def _load(self) -> _Loaded:
        if self._loaded is None:
            with LOADING:
                self._loaded = self._load_now()
        return self._loaded

    def _load_now(self) -> _Loaded:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import torch
            from transformers import WhisperForConditionalGeneration, WhisperProcessor
        except ImportError as exc:
            raise BackendUnavailable(f"embedded Whisper needs transformers and torch: "
                                     f"{INSTALL_HINT} ({exc})", backend=self.name) from exc
        if not self.model_path.is_dir():
            raise BackendUnavailable(f"model_path {str(self.model_path)!r} is not a folder",
                                     backend=self.name)
        if self.threads:  # on the worker thread: torch's intra-op setting is per thread
            torch.set_num_threads(self.threads)
        processor = WhisperProcessor.from_pretrained(self.model_path, local_files_only=True)
        model = WhisperForConditionalGeneration.from_pretrained(
            self.model_path, local_files_only=True).eval()
        lang_to_id = getattr(model.generation_config, "lang_to_id", None) or {}
        multilingual = bool(getattr(model.generation_config, "is_multilingual", lang_to_id))
        languages = frozenset(token.strip("<|>") for token in lang_to_id) if multilingual \
            else frozenset({"en"})
        return _Loaded(model, processor, languages, multilingual,
                       model.config.max_target_positions // 2 - 1)

    def _run(self, samples: Any, request: TranscriptionRequest) -> str:
        import torch

        loaded = self._load()
        options: dict[str, Any] = {"do_sample": request.temperature > 0}
        if request.temperature > 0:
            options["temperature"] = request.temperature
        if request.language and loaded.multilingual:
            options.update(language=request.language, task="transcribe")
        if request.prompt:
            ids = loaded.processor.get_prompt_ids(request.prompt)  # <|startofprev|> first
            options["prompt_ids"] = torch.as_tensor(
                [ids[0], *ids[1:][-loaded.max_prompt:]], dtype=torch.long)
        window = SAMPLE_RATE * WINDOW_SECONDS
        texts: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(samples), window):
                features = loaded.processor(
                    samples[start:start + window], sampling_rate=SAMPLE_RATE,
                    return_tensors="pt", return_attention_mask=True)
                tokens = loaded.model.generate(
                    features.input_features, attention_mask=features.attention_mask, **options)
                texts.append(loaded.processor.batch_decode(
                    tokens, skip_special_tokens=True)[0].strip())
        return " ".join(t for t in texts if t)

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        """The transcript; UnsupportedAudio (415) or UnknownLanguage (422) when this model
        cannot take the request as sent."""
        self._check_open()
        samples = await asyncio.to_thread(
            decode_audio, request.audio, request.filename, request.content_type)
        loaded = await self._in_worker(self._load)
        if request.language and request.language not in loaded.languages:
            raise UnknownLanguage(
                f"language: {request.language!r} is not one this Whisper model knows "
                f"({', '.join(sorted(loaded.languages))})")
        text = await self._in_worker(self._run, samples, request)
        return Transcript(text, request.language, round(len(samples) / SAMPLE_RATE, 3))

    async def warm_up(self) -> None:
        await self._in_worker(self._load)

    async def check_health(self) -> None:
        await self._in_worker(self._load)

    async def list_models(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        def release() -> None:
            self._loaded = None

        await self._close_worker(release)
