"""Our own AI API: /api/ai/fim, /api/ai/fim/stream, /api/ai/chat, /api/ai/embed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mimiverse.api.chat_fields import (
    MAX_IMAGES,
    MAX_TOOLS,
    Format,
    FunctionName,
    SamplingExtras,
    Strict,
    ToolChoice,
    ToolList,
    check_image_count,
    checked_image,
    image_from_url,
    json_arguments,
    response_format,
    tool_fields,
)
from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.errors import BACKEND_ERRORS, COMMON_ERRORS, error_body, error_responses
from mimiverse.api.lean import LeanRoute
from mimiverse.api.limits import (
    MAX_TEXT,
    EmbedText,
    EmbedTexts,
    KeepAlive,
    NumbersNotBooleans,
    StopText,
)
from mimiverse.backends.base import ChatMessage, Image, ToolCall
from mimiverse.backends.toolcalls import arguments_text, new_call_id
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



class Sampling(NumbersNotBooleans):
    """Unknown fields are refused (422 naming them): nothing sent is dropped."""

    model_config = ConfigDict(extra="forbid")

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


class ToolCallIn(Strict):
    id: str | None = Field(None, min_length=1, max_length=256)
    name: FunctionName
    arguments: dict[str, Any] | str = Field(default_factory=dict,
                                            description="an object, or its JSON text")

    @field_validator("arguments")
    @classmethod
    def _object(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        return json_arguments(value) if isinstance(value, str) else value


class Message(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field("", max_length=MAX_TEXT)
    images: list[Annotated[str, Field(max_length=30_000_000)]] = Field(
        default_factory=list,
        description=f"base64 images (or data: URLs, or http(s) URLs), at most {MAX_IMAGES} "
                    "in a request")
    tool_calls: list[ToolCallIn] = Field(default_factory=list, max_length=128)
    tool_call_id: str | None = Field(None, max_length=256, description="a tool result's call")
    tool_name: str | None = Field(None, max_length=256, description="a tool result's function")
    reasoning: str = Field("", max_length=MAX_TEXT)

    def to_message(self) -> ChatMessage:
        return ChatMessage(
            self.role, self.content, tuple(_image(i) for i in self.images),
            tuple(ToolCall(c.id or new_call_id(), c.name, arguments_text(c.arguments))
                  for c in self.tool_calls),
            self.tool_call_id, self.tool_name, self.reasoning,
        )


def _image(value: str) -> Image:
    if value.startswith(("data:", "http://", "https://")):
        return image_from_url(value)
    return checked_image(value)


class ChatBody(Sampling, SamplingExtras, Strict):
    """Unknown fields are refused (422 naming them): nothing sent is dropped."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=256)
    stream: bool = False
    tools: ToolList | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: Format | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)
    num_ctx: int | None = Field(None, ge=1, le=1 << 21)
    keep_alive: KeepAlive | None = None

    def to_input(self) -> ChatInput:
        messages = tuple(m.to_message() for m in self.messages)
        check_image_count(sum(len(m.images) for m in messages))
        fields = tool_fields(self.tools, self.tool_choice, self.parallel_tool_calls)
        fmt = response_format(self.response_format)
        if fmt is not None:
            fields["response_format"] = fmt
        fields.update(self.sampling_fields())
        for name in ("think", "keep_alive"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return ChatInput(messages, self.max_tokens, self.temperature, tuple(self.stop),
                         self.seed, fields)


class ToolCallOut(BaseModel):
    id: str
    name: str
    arguments: str = Field(description="JSON text of an object")


class AnswerMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    tool_calls: list[ToolCallOut] = Field(default_factory=list)
    reasoning: str = ""


class ChatResponse(BaseModel):
    message: AnswerMessage
    finish_reason: str | None
    latency: float
    cached: bool
    model: str
    backend: str


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # refused, naming them (422)

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
    done: dict[str, object] = {
        "completion": answer.text, "latency": answer.latency_ms, "cached": answer.cached,
        "model": answer.model, "backend": answer.backend, "finish_reason": answer.finish_reason,
    }
    if answer.tool_calls:
        done["tool_calls"] = [_call(c) for c in answer.tool_calls]
    if answer.reasoning:
        done["reasoning"] = answer.reasoning
    return done


def _call(c: ToolCall) -> dict[str, str]:
    return {"id": c.id, "name": c.name, "arguments": c.arguments}


def _delta(event: TextEvent) -> dict[str, object]:
    """`text`, and when present `reasoning` and `tool_calls` pieces (index; id and name on
    a call's first piece; argument fragments to append)."""
    if not (event.reasoning or event.tool_calls):
        return {"text": event.text}
    delta: dict[str, object] = {"text": event.text}
    if event.reasoning:
        delta["reasoning"] = event.reasoning
    if event.tool_calls:
        delta["tool_calls"] = [{"index": c.index, "id": c.id, "name": c.name,
                                "arguments": c.arguments} for c in event.tool_calls]
    return delta


async def sse_stream(events: AsyncIterator[TextEvent]) -> AsyncIterator[bytes]:
    """Deltas as `delta` events, then `done`; a failure mid-stream becomes `error`."""
    try:
        async for event in events:
            if event.answer is not None:
                yield sse("done", _done(event.answer))
            else:
                yield sse("delta", _delta(event))
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
    message = AnswerMessage(content=answer.text, reasoning=answer.reasoning,
                            tool_calls=[ToolCallOut(**_call(c)) for c in answer.tool_calls])
    return ChatResponse(
        message=message, finish_reason=answer.finish_reason, latency=answer.latency_ms,
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
