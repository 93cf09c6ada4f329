"""Our own AI API: /api/ai/fim, /api/ai/fim/stream, /api/ai/chat, /api/ai/embed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.errors import BACKEND_ERRORS, COMMON_ERRORS, error_body, error_responses
from mimiverse.api.lean import LeanRoute
from mimiverse.api.limits import MAX_TEXT, EmbedText, EmbedTexts, StopText
from mimiverse.backends.base import ChatMessage
from mimiverse.errors import MimiverseError
from mimiverse.gateway import Answer, ChatInput, FimInput, TextEvent

# Lean routes (api/lean.py): these are the gateway's hot path.
router = APIRouter(prefix="/api/ai", tags=["ai"], route_class=LeanRoute,
                   responses=error_responses(*COMMON_ERRORS, *BACKEND_ERRORS))
# Streams: server-sent events (`delta`, then `done` or `error`).
SSE_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/event-stream": {"schema": {
              "type": "object", "required": ["event", "data"],
              "properties": {"event": {"enum": ["delta", "done", "error"]},
                             "data": {"type": "string"}}}}},
          "description": "server-sent events"},
}



class Sampling(BaseModel):
    max_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    stop: list[StopText] = Field(default_factory=list, max_length=16)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class FimBody(Sampling):
    prefix: str = Field(max_length=MAX_TEXT)
    suffix: str = Field("", max_length=MAX_TEXT)
    language: str | None = Field(None, max_length=32, pattern=r"^[A-Za-z0-9_+#.\-]*$")
    path: str | None = Field(None, max_length=1024, description="file path, for context")
    single_line: bool | None = Field(None, description="force (true) or forbid single-line")

    def to_input(self) -> FimInput:
        return FimInput(
            prefix=self.prefix, suffix=self.suffix, language=self.language, path=self.path,
            max_tokens=self.max_tokens, temperature=self.temperature, stop=tuple(self.stop),
            seed=self.seed, single_line=self.single_line,
        )


class FimResponse(BaseModel):
    completion: str
    latency: float = Field(description="milliseconds")
    cached: bool
    model: str
    backend: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_TEXT)


class ChatBody(Sampling):
    messages: list[Message] = Field(min_length=1, max_length=256)
    stream: bool = False

    def to_input(self) -> ChatInput:
        return ChatInput(
            messages=tuple(ChatMessage(m.role, m.content) for m in self.messages),
            max_tokens=self.max_tokens, temperature=self.temperature, stop=tuple(self.stop),
            seed=self.seed,
        )


class ChatResponse(BaseModel):
    message: Message
    latency: float
    cached: bool
    model: str
    backend: str


class EmbedBody(BaseModel):
    input: EmbedText | EmbedTexts = Field(description="one text or a list of 1 to 256 texts")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    model: str
    dimensions: int
    latency: float
    cached: bool
    backend: str


def sse(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _done(answer: Answer) -> dict[str, object]:
    return {
        "completion": answer.text, "latency": answer.latency_ms, "cached": answer.cached,
        "model": answer.model, "backend": answer.backend, "finish_reason": answer.finish_reason,
    }


async def sse_stream(events: AsyncIterator[TextEvent]) -> AsyncIterator[bytes]:
    """Text deltas as `delta` events, then `done`; a failure mid-stream becomes `error`."""
    try:
        async for event in events:
            if event.answer is not None:
                yield sse("done", _done(event.answer))
            else:
                yield sse("delta", {"text": event.text})
    except MimiverseError as exc:
        # The status line is already sent: the error travels as the last event.
        yield sse("error", error_body(exc))


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(events: AsyncIterator[TextEvent]) -> StreamingResponse:
    return StreamingResponse(sse_stream(events), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.post("/fim")
async def fim(body: FimBody, request: Request, gateway: GatewayDep) -> FimResponse:
    answer = await cancel_on_disconnect(request, gateway.complete(body.to_input()))
    return FimResponse(
        completion=answer.text, latency=answer.latency_ms, cached=answer.cached,
        model=answer.model, backend=answer.backend,
    )


@router.post("/fim/stream", response_class=StreamingResponse, responses=SSE_RESPONSE)
async def fim_stream(body: FimBody, request: Request, gateway: GatewayDep) -> StreamingResponse:
    # Opening (cache, routing, fallback, first token) happens before the status line, so
    # a failure there is a real 503/504; afterwards errors travel as an SSE event.
    events = await cancel_on_disconnect(request, gateway.stream_fim(body.to_input()))
    return event_stream(events)


@router.post("/chat", response_model=ChatResponse, responses=SSE_RESPONSE)
async def chat(
    body: ChatBody, request: Request, gateway: GatewayDep
) -> ChatResponse | StreamingResponse:
    if body.stream:
        events = await cancel_on_disconnect(request, gateway.stream_chat(body.to_input()))
        return event_stream(events)
    answer = await cancel_on_disconnect(request, gateway.chat(body.to_input()))
    return ChatResponse(
        message=Message(role="assistant", content=answer.text), latency=answer.latency_ms,
        cached=answer.cached, model=answer.model, backend=answer.backend,
    )


@router.post("/embed")
async def embed(body: EmbedBody, request: Request, gateway: GatewayDep) -> EmbedResponse:
    result = await cancel_on_disconnect(request, gateway.embed(body.texts()))
    return EmbedResponse(
        embeddings=result.vectors, model=result.model,
        dimensions=len(result.vectors[0]) if result.vectors else 0,
        latency=result.latency_ms, cached=result.cached, backend=result.backend,
    )
