"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, ...) over /v1/*.

Completions go to /v1/completions with the already rendered prompt, chat to
/v1/chat/completions; both stream Server-Sent Events: `data: {chunk}` events separated by
blank lines, `: comment` lines, and `data: [DONE]` at the end.
"""

from __future__ import annotations

import base64
import functools
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import orjson

from mimiverse.backends.base import (
    ChatMessage,
    ChatRequest,
    Delta,
    GenerateRequest,
    Passthrough,
    Tool,
    ToolCallChunk,
    sampling_overrides,
)
from mimiverse.backends.http import HttpBackend, checked_vectors, stream_error
from mimiverse.backends.toolcalls import call_id_for, new_call_id
from mimiverse.config import Task
from mimiverse.errors import BackendProtocolError, BackendUnavailable

# Asks for a final chunk with token counts (`choices: []`, `usage: {...}`). vLLM, llama.cpp
# server and LM Studio accept it; servers that predate it ignore unknown fields.
_STREAM_OPTIONS = {"include_usage": True}


class OpenAIBackend(HttpBackend):
    kind: ClassVar[str] = "openai"
    tasks: ClassVar[frozenset[Task]] = frozenset({"completion", "chat", "embedding"})
    # Not num_ctx nor keep_alive: context size and model memory are the server's settings.
    # top_k, min_p and repeat_penalty are the extensions vLLM and llama.cpp's server read.
    chat_fields: ClassVar[frozenset[str]] = frozenset({
        "tools", "tool_choice", "parallel_tool_calls", "strict tools", "response_format",
        "think", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty",
        "images", "image URLs", "message names",
    })

    def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        payload = _sampling(request)
        payload["prompt"] = request.prompt
        _extensions(request, payload)
        if request.passthrough_kind == "openai":
            payload.update(request.passthrough)
        return self._stream("/v1/completions", payload, _completion_delta)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        return self._stream("/v1/chat/completions", chat_payload(request), ChatDeltas())

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        if not texts:
            return []
        payload = {"model": model, "input": list(texts), "encoding_format": "float",
                   **dict(passthrough)}
        body = await self.post_json("/v1/embeddings", payload,
                                    first_byte_s=self.config.timeouts.first_token_s)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendProtocolError("/v1/embeddings returned no data list", backend=self.name)
        try:
            # The protocol pairs vectors with inputs by `index`, not by position.
            items = sorted(data, key=lambda item: int(item["index"]))
            vectors = [_vector(item["embedding"]) for item in items]
        except (KeyError, TypeError, ValueError, struct.error) as exc:
            raise BackendProtocolError(f"/v1/embeddings: {exc!r}", backend=self.name) from exc
        return checked_vectors(vectors, len(texts), backend=self.name)

    async def list_models(self) -> list[str]:
        body = await self.get_json("/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendProtocolError("/v1/models returned no data list", backend=self.name)
        names: list[str] = []
        for item in data:
            name = item.get("id") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise BackendProtocolError("/v1/models: a model has no id", backend=self.name)
            names.append(name)
        return names

    async def check_health(self) -> None:
        # /v1/models is the one read-only endpoint every compatible server has.
        await self.list_models()

    async def _stream(
        self, path: str, payload: dict[str, Any],
        delta_of: Callable[[dict[str, Any]], Delta | None],
    ) -> AsyncIterator[Delta]:
        finish: str | None = None
        usage: dict[str, Any] = {}
        done = False
        events = SseEvents()
        async with self.stream_lines(path, payload) as batches:
            async for lines in batches:
                for field, data in events.feed(lines):
                    if done:
                        continue  # read to the end so the connection goes back to the pool
                    if field == "error":
                        raise BackendUnavailable(stream_error(path, data), backend=self.name)
                    if data == "[DONE]":
                        done = True
                        continue
                    choice, reported = self._chunk(path, data)
                    if reported is not None:
                        usage = reported  # the last report wins (some send one per chunk)
                    if choice is None:
                        continue
                    delta = delta_of(choice)
                    if delta is not None:
                        yield delta
                    reason = choice.get("finish_reason")
                    if reason:
                        finish = _FINISH.get(reason, "stop")
        if finish is None and not done:
            raise BackendProtocolError(f"{path} stream ended without finishing", backend=self.name)
        yield Delta(
            finish_reason=finish or "stop",
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
        )

    def _chunk(
        self, path: str, data: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One streamed chunk: its choice 0 (None in the usage-only chunk, which has
        `choices: []`; only index 0 exists since n=1) and its usage report, if any."""
        chunk = orjson.loads(data)  # malformed -> BackendProtocolError (mapped)
        if not isinstance(chunk, dict):
            raise BackendProtocolError(f"{path} streamed a non-object", backend=self.name)
        if chunk.get("error"):
            raise BackendUnavailable(stream_error(path, chunk["error"]), backend=self.name)
        usage = chunk.get("usage")
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise TypeError("'choices' is not a list")
        first = None
        for choice in choices:  # a loop, not generators: this runs for every token
            if not isinstance(choice, dict):
                raise TypeError("a choice is not an object")
            if first is None and choice.get("index", 0) == 0:
                first = choice
        return first, usage if isinstance(usage, dict) else None


class SseEvents:
    """Server-sent events from lines, fed as they arrive: (field, data) per event,
    ("data", joined data lines) or ("error", value).

    Follows the SSE rules that matter here: `:` comments, optional space after the colon,
    multi-line data joined with newlines, blank line ends an event. llama.cpp's server
    writes failures as a non-standard `error: {...}` field, reported as ("error", value).
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, lines: list[str]) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(("data", "\n".join(self._data)))
                    self._data = []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "error":
                events.append(("error", value))
        return events


def _sampling(request: GenerateRequest | ChatRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": request.model,
        # max_tokens, not max_completion_tokens: every compatible server knows this one.
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stream": True,
        "stream_options": dict(_STREAM_OPTIONS),
        **sampling_overrides(request),
    }
    return payload


_FINISH = {"length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}


def _completion_delta(choice: dict[str, Any]) -> Delta | None:
    text = choice.get("text") or ""
    if not isinstance(text, str):
        raise TypeError("'text' is not a string")
    return Delta(text) if text else None


class ChatDeltas:
    """Chat chunks' choice 0 as Deltas: content, reasoning (`reasoning_content`, or vLLM's
    newer `reasoning`) and tool-call pieces, an id made for a call that came without."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def __call__(self, choice: dict[str, Any]) -> Delta | None:
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise TypeError("'delta' is not an object")
        text = delta.get("content") or ""  # role-only chunks: no content
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        if not isinstance(text, str) or not isinstance(reasoning, str):
            raise TypeError("'delta.content' or its reasoning is not a string")
        calls = delta.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise TypeError("'delta.tool_calls' is not a list")
            return Delta(text, reasoning=reasoning,
                         tool_calls=tuple(self._piece(c) for c in calls))
        return Delta(text, reasoning=reasoning) if text or reasoning else None

    def _piece(self, call: Any) -> ToolCallChunk:
        index = call.get("index", 0)
        function = call.get("function") or {}
        if type(index) is not int or not isinstance(function, dict):
            raise TypeError("a tool call piece has no index or function")
        ident, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
        if index not in self._seen:
            self._seen.add(index)
            if not isinstance(name, str) or not name:
                raise TypeError("a tool call began without its function's name")
            ident = ident if isinstance(ident, str) and ident else new_call_id()
        return ToolCallChunk(index, ident if isinstance(ident, str) else None,
                             name if isinstance(name, str) else None,
                             arguments if isinstance(arguments, str) else "")


def chat_payload(request: ChatRequest) -> dict[str, Any]:
    """A /v1/chat/completions body with everything `request` asks for (checked against
    OpenAIBackend.chat_fields before it gets here)."""
    payload = _sampling(request)
    messages = request.messages
    payload["messages"] = [_message(m, messages, i) for i, m in enumerate(messages)]
    _extensions(request, payload)
    if request.parallel_tool_calls is not None:
        payload["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tools:
        payload["tools"] = [_tool(t) for t in request.tools]
        if request.tool_choice is not None:
            payload["tool_choice"] = {"type": "function", "function": {
                "name": request.tool_choice_name}} if request.tool_choice == "function" \
                else request.tool_choice
    fmt = request.response_format
    if fmt is not None:
        payload["response_format"] = {"type": "json_object"} if fmt.type == "json_object" \
            else {"type": "json_schema", "json_schema": _drop_none(
                {"name": fmt.name or "response", "schema": fmt.schema, "strict": fmt.strict})}
    if request.think is not None:
        payload["reasoning_effort"] = request.think if isinstance(request.think, str) \
            else "medium" if request.think else "none"
    if request.passthrough_kind == "openai":
        payload.update(request.passthrough)
    return payload


_EXTENSIONS = ("top_k", "min_p", "presence_penalty", "frequency_penalty")


def _extensions(request: GenerateRequest | ChatRequest, payload: dict[str, Any]) -> None:
    for name in _EXTENSIONS:
        value = getattr(request, name)
        if value is not None:
            payload[name] = value
    if request.repeat_penalty is not None:  # vLLM's name, and llama.cpp server's
        payload["repetition_penalty"] = payload["repeat_penalty"] = request.repeat_penalty


def _message(m: ChatMessage, messages: tuple[ChatMessage, ...], at: int) -> dict[str, Any]:
    content: Any = m.content
    if m.images:
        content = [{"type": "text", "text": m.content}] if m.content else []
        content += [{"type": "image_url", "image_url": {"url": i.data_url()}} for i in m.images]
    out: dict[str, Any] = {"role": m.role, "content": content}
    if m.tool_calls:
        out["content"] = content or None
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id or call_id_for(m.tool_name, messages, at) \
            or new_call_id()
    if m.reasoning:
        out["reasoning_content"] = m.reasoning
    if m.name:
        out["name"] = m.name
    return out


@functools.lru_cache(maxsize=1024)
def _tool(t: Tool) -> dict[str, Any]:  # read-only: shared by every request sending `t`
    return {"type": "function", "function": _drop_none({
        "name": t.name, "description": t.description or None, "parameters": t.parameters,
        "strict": t.strict})}


def _drop_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _vector(value: Any) -> Any:
    if isinstance(value, str):
        # encoding_format=base64 (a server that ignored our "float"): little-endian float32.
        raw = base64.b64decode(value, validate=True)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return value


def _count(value: object) -> int | None:
    return value if type(value) is int else None
