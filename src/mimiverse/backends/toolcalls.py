"""Tool calls between protocols: ids, argument forms, and streamed pieces made whole.

OpenAI carries a call's arguments as JSON text and streams calls in pieces (index, then id
and name once, then argument fragments); Ollama carries them as a JSON object, whole, and
gives no id. Internally a call's arguments are JSON text (ToolCall.arguments).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from mimiverse.backends.base import ChatMessage, ToolCall, ToolCallChunk


def new_call_id() -> str:
    """An id for a call whose backend gave none (OpenAI clients need one to answer it)."""
    return "call_" + uuid.uuid4().hex[:24]


def arguments_object(text: str) -> dict[str, Any]:
    """A call's JSON text as the object Ollama carries; ValueError when it is not one."""
    value = orjson.loads(text or "{}")  # JSONDecodeError is a ValueError
    if not isinstance(value, dict):
        raise ValueError("tool call arguments are not a JSON object")
    return value


def arguments_text(value: Any) -> str:
    """Arguments as JSON text: kept as sent when already text, else serialised."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class CallAssembler:
    """Whole ToolCalls from streamed pieces, in order of their index."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def add(self, chunks: Iterable[ToolCallChunk]) -> None:
        for chunk in chunks:
            call = self._calls.setdefault(chunk.index, ["", "", ""])
            if chunk.id:
                call[0] = chunk.id
            if chunk.name:
                call[1] = chunk.name
            call[2] += chunk.arguments

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(c[0] or new_call_id(), c[1], c[2] or "{}")
                     for _, c in sorted(self._calls.items()))

    def __bool__(self) -> bool:
        return bool(self._calls)


def whole_chunks(calls: Sequence[ToolCall], first_index: int = 0) -> tuple[ToolCallChunk, ...]:
    """Whole calls as one piece each."""
    return tuple(ToolCallChunk(first_index + i, c.id, c.name, c.arguments)
                 for i, c in enumerate(calls))


def call_names(messages: Sequence[ChatMessage]) -> dict[str, str]:
    """Call id -> function name over the assistant turns: a tool result that names only
    one of the two gets the other (OpenAI needs the id, Ollama reads the name)."""
    return {c.id: c.name for m in messages for c in m.tool_calls}


def call_id_for(name: str | None, messages: Sequence[ChatMessage], upto: int) -> str | None:
    """The id of the latest call of `name` before message `upto` (Ollama clients answer a
    call by its function's name)."""
    for message in reversed(messages[:upto]):
        for call in reversed(message.tool_calls):
            if call.name == name:
                return call.id
    return None
