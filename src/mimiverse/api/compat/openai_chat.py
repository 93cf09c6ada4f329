"""/v1/chat/completions bodies and answers: messages with image parts and tool calls,
tools, tool_choice, response_format, reasoning_effort and the sampling extensions.

Fields this module does not define: inside messages, tools and formats they are refused
(400 naming them); at the top level they pass through, verbatim, to a backend that speaks
OpenAI's protocol, and a request routed to any other kind is refused (400 naming the
field and the backend). Either way nothing is accepted and dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from mimiverse.answers import Answer, TextEvent
from mimiverse.api.chat_fields import (
    ArgumentsText,
    Format,
    SamplingExtras,
    Strict,
    ToolChoice,
    ToolList,
    check_image_count,
    image_from_url,
    passthrough_fields,
    response_format,
    tool_fields,
)
from mimiverse.api.limits import MAX_TEXT
from mimiverse.backends.base import ChatMessage, Image, ToolCall
from mimiverse.gateway import ChatInput


class TextPart(Strict):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class ImageURL(Strict):
    url: str = Field(max_length=30_000_000)
    # Only the default: the detail level is OpenAI's own resizing, no other server has it.
    detail: Literal["auto"] | None = None



class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class CallIn(Strict):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: ArgumentsText


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = Field(None, max_length=MAX_TEXT)
    # A tool result's function (the older form), else the participant's name.
    name: str | None = Field(None, max_length=256)
    tool_calls: list[CallIn] | None = Field(None, max_length=128)
    tool_call_id: str | None = Field(None, max_length=256)
    reasoning_content: str | None = Field(None, max_length=MAX_TEXT)
    # What the openai client sends back when an answer's message is appended as is.
    refusal: None = None
    annotations: list[None] | None = Field(None, max_length=0)
    audio: None = None
    function_call: None = None

    def to_message(self) -> ChatMessage:
        text, images = self._parts()
        return ChatMessage(
            # "developer" is OpenAI's newer name for the system role.
            "system" if self.role == "developer" else self.role, text, images,
            tuple(ToolCall(c.id, c.function.name, c.function.arguments)
                  for c in self.tool_calls or ()),
            self.tool_call_id, self.name if self.role == "tool" else None,
            self.reasoning_content or "", self.name if self.role != "tool" else None,
        )

    def _parts(self) -> tuple[str, tuple[Image, ...]]:
        if self.content is None or isinstance(self.content, str):
            return self.content or "", ()
        text = "".join(p.text for p in self.content if isinstance(p, TextPart))
        images = tuple(image_from_url(p.image_url.url) for p in self.content
                       if isinstance(p, ImagePart))
        return text, images

    def text(self) -> str:
        return self._parts()[0]


class ChatFields(SamplingExtras, Strict):
    """The chat-only fields of /v1/chat/completions (the sampling ones are shared)."""

    model_config = ConfigDict(extra="allow")  # the rest passes through (see module doc)

    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    logprobs: bool | None = Field(None, json_schema_extra={"enum": [False, None]})
    tools: ToolList | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: Format | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("only logprobs=false is supported")
        return value

    def chat_input(self, max_tokens: int | None, temperature: float, stop: tuple[str, ...],
                   seed: int | None, passthrough: dict[str, Any]) -> ChatInput:
        messages = tuple(m.to_message() for m in self.messages)
        check_image_count(sum(len(m.images) for m in messages))
        fields: dict[str, Any] = tool_fields(self.tools, self.tool_choice,
                                             self.parallel_tool_calls)
        fmt = response_format(self.response_format)
        if fmt is not None:
            fields["response_format"] = fmt
        if self.reasoning_effort is not None:  # "none": thinking off
            fields["think"] = self.reasoning_effort if self.reasoning_effort != "none" \
                else False
        fields.update(self.sampling_fields())
        fields.update(passthrough_fields("openai", passthrough))
        return ChatInput(messages, self.max_completion_tokens or max_tokens, temperature, stop,
                         seed, fields)


# -- answers --------------------------------------------------------------------------------

def finish(answer: Answer) -> str:
    reason = answer.finish_reason
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


def message_object(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant",
                               "content": answer.text or (None if answer.tool_calls else ""),
                               "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.name, "arguments": c.arguments}} for c in answer.tool_calls]
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    return message


def delta_object(event: TextEvent) -> dict[str, Any]:
    """A streamed delta as OpenAI spells it: content, reasoning_content, tool_calls pieces
    (index; id, type and name on a call's first piece; argument fragments)."""
    if not (event.reasoning or event.tool_calls):
        return {"content": event.text}
    delta: dict[str, Any] = {}
    if event.text:
        delta["content"] = event.text
    if event.reasoning:
        delta["reasoning_content"] = event.reasoning
    if event.tool_calls:
        pieces = []
        for c in event.tool_calls:
            piece: dict[str, Any] = {"index": c.index}
            if c.id:
                piece.update(id=c.id, type="function")
            function: dict[str, str] = {"arguments": c.arguments}
            if c.name:
                function["name"] = c.name
            piece["function"] = function
            pieces.append(piece)
        delta["tool_calls"] = pieces
    return delta
