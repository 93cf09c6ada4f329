"""POST /v1/audio/transcriptions (OpenAI's multipart API) and POST /api/ai/voice (audio ->
transcript -> ask, explain or chat -> answer).

Both take multipart/form-data (declared with File() so the schema says so); a field we
do not know is refused with 422 naming it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from mimiverse.api.ai import SSE_HEADERS, sse
from mimiverse.api.assist import (
    AssistantDep,
    AssistResponse,
    SourceOut,
    sources_out,
    sse_schema,
    with_sources,
)
from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.errors import BACKEND_ERRORS, COMMON_ERRORS, error_responses
from mimiverse.assist.prompts import Prompt
from mimiverse.assist.service import Question
from mimiverse.assist.voice import Heard, Transcriber
from mimiverse.backends.base import ChatMessage
from mimiverse.backends.speech import TranscriptionRequest
from mimiverse.errors import InvalidRequest
from mimiverse.gateway import ChatInput

router = APIRouter(tags=["voice"],
                   responses=error_responses(*COMMON_ERRORS, 404, 409, *BACKEND_ERRORS))

# A form field is there or not: no null in the schema (pydantic's SkipJsonSchema).
Absent = SkipJsonSchema[None]
# Constraints sit on the value's own type, so the schema keeps them without a null.
Language = Annotated[str, StringConstraints(max_length=16, pattern=r"^[A-Za-z\-]+$")]
PathText = Annotated[str, StringConstraints(max_length=4096)]
LineNumber = Annotated[int, Field(ge=1, le=10_000_000)]


async def get_transcriber(request: Request) -> Transcriber:
    transcriber: Transcriber = request.app.state.transcriber
    return transcriber


TranscriberDep = Annotated[Transcriber, Depends(get_transcriber)]


class TranscriptionForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: UploadFile = Field(description="the recording (wav, mp3, ogg, flac, m4a, webm)")
    model: str = Field(min_length=1, max_length=256,
                       description="whisper-1, transcription, or the configured model")
    language: Language | Absent = None
    prompt: Annotated[str, StringConstraints(max_length=4000)] | Absent = None
    response_format: Literal["json", "text"] = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)


class VoiceForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: UploadFile = Field(description="the spoken question or request")
    mode: Literal["ask", "explain", "chat"] = "ask"
    language: Language | Absent = None
    repo: PathText | Absent = None
    path: PathText | Absent = Field(None, description="explain: an indexed file")
    start_line: LineNumber | Absent = None
    end_line: LineNumber | Absent = None
    stream: bool = False


class Transcription(BaseModel):
    text: str


class VoiceResponse(AssistResponse):
    transcript: str


async def _heard(transcriber: Transcriber, upload: UploadFile, model: str | None,
                 language: str | None, prompt: str | None = None,
                 temperature: float = 0.0) -> Heard:
    limit = transcriber.settings.voice.max_audio_bytes
    audio = await upload.read(limit + 1)  # one byte more tells "too large" without it all
    request = TranscriptionRequest(
        audio, upload.filename or "audio", upload.content_type or "application/octet-stream",
        model or "", language, prompt, temperature)
    return await transcriber.hear(request)


@router.post("/v1/audio/transcriptions", response_model=Transcription,
             responses={200: {"content": {"text/plain": {}}}})
async def transcriptions(form: Annotated[TranscriptionForm, File()], request: Request,
                         transcriber: TranscriberDep) -> Response:
    """OpenAI's transcription API, served by the `transcription` route's speech servers."""
    heard = await cancel_on_disconnect(request, _heard(
        transcriber, form.file, form.model, form.language, form.prompt, form.temperature))
    if form.response_format == "text":
        return PlainTextResponse(heard.transcript.text + "\n")
    return Response(Transcription(text=heard.transcript.text).model_dump_json(),
                    media_type="application/json")


@router.post("/api/ai/voice", response_model=VoiceResponse,
             responses=sse_schema("transcript", "sources", "delta", "done", "error"))
async def voice(form: Annotated[VoiceForm, File()], request: Request, gateway: GatewayDep,
                assistant: AssistantDep, transcriber: TranscriberDep) -> Response:
    """Speak a question (ask), a request about lines of a file (explain) or a chat
    message; the answer comes as from /api/ai/ask, with the transcript."""
    transcriber.model_for(None)  # 409 at once when no speech server is configured
    lines = (form.path, form.start_line, form.end_line)
    if form.mode == "explain" and any(v is None for v in lines):
        raise InvalidRequest("mode explain needs path, start_line and end_line")
    if form.mode != "explain" and (form.start_line is not None or form.end_line is not None):
        raise InvalidRequest("start_line and end_line go with mode explain")
    heard = await cancel_on_disconnect(request, _heard(transcriber, form.file, None,
                                                       form.language))
    said = heard.transcript.text
    if not said:
        raise InvalidRequest("nothing was heard in the audio")
    prompt: Prompt
    if form.mode == "ask":
        prompt = await assistant.ask(Question(said, form.repo, form.path))
    elif form.mode == "explain":
        assert form.path is not None and form.start_line is not None
        assert form.end_line is not None
        prompt = await assistant.explain_file(form.path, form.start_line, form.end_line,
                                              form.repo, request=said)
    else:
        if form.repo is not None or form.path is not None:
            raise InvalidRequest("repo and path go with modes ask and explain")
        prompt = Prompt((ChatMessage("user", said),), ())
    chat = ChatInput(prompt.messages)
    if form.stream:
        events = await cancel_on_disconnect(request, gateway.stream_chat(chat))

        async def body() -> AsyncIterator[bytes]:
            yield sse("transcript", {"text": said, "backend": heard.backend})
            async for chunk in with_sources(prompt.sources, events):
                yield chunk

        return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)
    answer = await cancel_on_disconnect(request, gateway.chat(chat))
    return Response(VoiceResponse(
        transcript=said, answer=answer.text,
        sources=[SourceOut.model_validate(s) for s in sources_out(prompt.sources)],
        latency=answer.latency_ms, cached=answer.cached, model=answer.model,
        backend=answer.backend,
    ).model_dump_json(), media_type="application/json")
