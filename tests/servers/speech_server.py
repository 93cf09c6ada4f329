"""A loopback OpenAI-compatible speech server: POST /v1/audio/transcriptions (multipart).

It does no speech recognition: it answers the transcript a test sets, after checking that
the upload is a real WAV recording (its length is read from the file and reported as
`duration`), and records every field it was sent.
"""

from __future__ import annotations

import hashlib
import io
import wave
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


class SpeechApp:
    def __init__(self, transcript: str = "") -> None:
        self.transcript = transcript
        self.status = 200  # another status: answer with OpenAI's error shape
        self.requests: list[dict[str, Any]] = []
        self.closing = False  # the harness sets it on stop
        self._app = Starlette(routes=[
            Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"])])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def transcriptions(self, request: Request) -> JSONResponse:
        async with request.form() as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return _error(400, "file is required")
            audio = await upload.read()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            self.requests.append({**fields, "filename": upload.filename,
                                  "content_type": upload.content_type,
                                  "sha256": hashlib.sha256(audio).hexdigest()})
        if self.status != 200:
            return _error(self.status, "the speech server failed")
        try:
            with wave.open(io.BytesIO(audio)) as recording:
                duration = recording.getnframes() / recording.getframerate()
        except (wave.Error, EOFError):
            return _error(400, "could not decode the audio")
        return JSONResponse({"task": "transcribe", "language": "en",
                             "duration": duration, "text": " " + self.transcript})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": None}}, status_code=status)
