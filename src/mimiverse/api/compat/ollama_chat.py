"""/api/chat bodies and answers: images, tool calls and tool results in messages, tools,
`format` (json or a schema), `think`, `keep_alive`, and every option.

Fields this module does not define: inside messages and tools they are refused (400
naming them); options and top-level fields it does not model pass through, verbatim, to
an Ollama backend, and a request routed to any other kind is refused (400 naming the
field and the backend). Nothing is accepted and dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from mimiverse.answers import Answer
from mimiverse.api.chat_fields import (
    FunctionName,
    SamplingExtras,
    Strict,
    ToolList,
    check_image_count,
    checked_image,
    passthrough_fields,
    tool_fields,
)
from mimiverse.api.limits import MAX_TEXT, KeepAlive, NumbersNotBooleans, StopText
from mimiverse.backends.base import ChatMessage, ResponseFormat, ToolCall
from mimiverse.backends.toolcalls import arguments_object, arguments_text, new_call_id
from mimiverse.gateway import ChatInput

Base64Image = Annotated[str, Field(max_length=30_000_000)]


class CallFunction(NumbersNotBooleans, Strict):
    name: FunctionName
    arguments: dict[str, Any] = Field(default_factory=dict)
    # Ollama numbers an answer's calls; sent on, as it came, to Ollama backends (the order
    # of the calls carries it for other kinds).
    index: int | None = Field(None, ge=0, le=1 << 16)


class CallIn(Strict):
    id: str | None = Field(None, max_length=256)
    # Not Ollama's, but sent by clients that speak OpenAI's shapes too: "function" is the
    # only kind of call there is, and every call here is one.
    type: Literal["function"] | None = None
    function: CallFunction


class Message(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field("", max_length=MAX_TEXT)
    images: list[Base64Image] | None = None  # counted per request (check_image_count)
    tool_calls: list[CallIn] | None = Field(None, max_length=128)
    tool_name: str | None = Field(None, max_length=256)
    tool_call_id: str | None = Field(None, max_length=256)
    thinking: str | None = Field(None, max_length=MAX_TEXT)

    def to_message(self) -> ChatMessage:
        return ChatMessage(
            self.role, self.content or "", tuple(checked_image(i) for i in self.images or ()),
            # Ollama clients send calls without ids: made here, matched by name below.
            tuple(ToolCall(c.id or new_call_id(), c.function.name,
                           arguments_text(c.function.arguments), c.function.index)
                  for c in self.tool_calls or ()),
            self.tool_call_id, self.tool_name, self.thinking or "",
        )


class ChatOptions(SamplingExtras, Strict):
    """Ollama's options; those not named here pass through to Ollama backends."""

    model_config = ConfigDict(extra="allow")

    num_predict: int | None = Field(None, ge=-2, le=131072)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    stop: StopText | Annotated[list[StopText], Field(max_length=64)] | None = None
    seed: int | None = Field(None, ge=-1, le=2**31 - 1)
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)
    num_ctx: int | None = Field(None, ge=1, le=1 << 21)

    def max_tokens(self) -> int | None:
        # -1 (no limit) and -2 (fill the context) mean "as many as the route allows".
        return self.num_predict if self.num_predict and self.num_predict > 0 else None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def fixed_seed(self) -> int | None:
        return self.seed if self.seed is not None and self.seed >= 0 else None  # -1: random

    def passthrough(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The request's fields we do not model (`extra`) and the options we do not, for
        Ollama backends only."""
        options = {f"options.{k}": v for k, v in (self.model_extra or {}).items()}
        return passthrough_fields("ollama", {**extra, **options})


class ChatFields(NumbersNotBooleans, Strict):
    """The fields of an /api/chat body besides `model` and `stream`."""

    model_config = ConfigDict(extra="allow")

    messages: list[Message] = Field(default_factory=list, max_length=256)
    options: ChatOptions = Field(default_factory=ChatOptions)
    tools: ToolList | None = Field(None, max_length=128)
    format: Literal["", "json"] | dict[str, Any] | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    keep_alive: KeepAlive | None = None

    def chat_input(self, extra: dict[str, Any]) -> ChatInput:
        o = self.options
        messages = tuple(m.to_message() for m in self.messages)
        check_image_count(sum(len(m.images) for m in messages))
        fields: dict[str, Any] = tool_fields(self.tools, None)
        fields.update(o.sampling_fields())
        add_format_and_think(fields, self.format, self.think)
        if self.keep_alive is not None:
            fields["keep_alive"] = self.keep_alive
        fields.update(o.passthrough(extra))
        return ChatInput(messages, o.max_tokens(), o.temperature or 0.0, o.stops(),
                         o.fixed_seed(), fields)


def message_object(answer: Answer | None, text: str = "") -> dict[str, Any]:
    """An answer's message as Ollama spells it (calls whole, arguments as objects); with
    no answer, a streamed text delta's."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if answer is None:
        return message
    message["content"] = answer.text
    if answer.reasoning:
        message["thinking"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = tool_calls(answer)
    return message


def tool_calls(answer: Answer) -> list[dict[str, Any]]:
    """ValueError when the model's arguments are not a JSON object (Ollama cannot carry
    them otherwise)."""
    return [{"id": c.id, "function": {"index": i, "name": c.name,
                                      "arguments": arguments_object(c.arguments)}}
            for i, c in enumerate(answer.tool_calls)]


def add_format_and_think(fields: dict[str, Any], format: Any, think: Any) -> None:
    """Ollama's `format` ("json" or a JSON schema) and `think`, as the chat request's own."""
    if format == "json":
        fields["response_format"] = ResponseFormat("json_object")
    elif isinstance(format, dict):
        fields["response_format"] = ResponseFormat("json_schema", format)
    if think is not None:
        fields["think"] = think
