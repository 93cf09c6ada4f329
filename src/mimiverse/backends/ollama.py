"""Ollama over its native API: /api/generate (raw), /api/chat, /api/embed, /api/tags, /api/ps.

Streams are NDJSON: one JSON object per line, the last one with `done: true`, `done_reason`
and token counts. Ollama reports a failure after the status line as an `{"error": ...}` line.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from mimiverse.backends.base import (
    ChatMessage,
    ChatRequest,
    Delta,
    GenerateRequest,
    Passthrough,
    Tool,
    ToolCall,
    ToolCallChunk,
    sampling_overrides,
)
from mimiverse.backends.http import HttpBackend, checked_vectors, stream_error
from mimiverse.backends.toolcalls import (
    arguments_object,
    arguments_text,
    call_names,
    new_call_id,
)
from mimiverse.config import Task
from mimiverse.errors import BackendProtocolError, BackendUnavailable

# How long Ollama keeps a model in memory after a request; its default (5m) unloads a
# completion model between typing bursts and the next keystroke pays the load time.
KEEP_ALIVE = "30m"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model Ollama holds in memory, as /api/ps reports it."""

    name: str
    size: int  # bytes in memory, on all devices
    size_vram: int  # bytes of it in GPU memory (== size when fully offloaded)
    expires_at: str | None  # when Ollama unloads it unless used again (RFC 3339)


class OllamaBackend(HttpBackend):
    # Ollama reports prompt timing; on a CPU it is slow enough for the budget to matter.
    default_target_prompt_s: ClassVar[float | None] = 1.5
    kind: ClassVar[str] = "ollama"
    tasks: ClassVar[frozenset[Task]] = frozenset({"completion", "chat", "embedding"})
    # Not: tool_choice "required" or one named function, parallel_tool_calls=false,
    # strict tool arguments, images by URL (Ollama takes image bytes only).
    chat_fields: ClassVar[frozenset[str]] = frozenset({
        "tools", "response_format", "think", "top_k", "min_p", "presence_penalty",
        "frequency_penalty", "repeat_penalty", "num_ctx", "keep_alive", "images",
    })

    def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        payload: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt,
            # The prompt is already rendered (FIM template included): no Modelfile template.
            "raw": True,
            "stream": True,
            "keep_alive": KEEP_ALIVE if request.keep_alive is None else request.keep_alive,
            "options": _with_sampling(_options(request), request),
        }
        _pass_through(request, payload)
        return self._stream("/api/generate", payload, _generate_delta)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        return self._stream("/api/chat", chat_payload(request), ChatReader())

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        if not texts:
            return []
        payload: dict[str, Any] = {"model": model, "input": list(texts),
                                   "keep_alive": KEEP_ALIVE}
        _merge(passthrough, payload)  # keep_alive, truncate, options.*, ... as sent
        body = await self.post_json("/api/embed", payload,
                                    first_byte_s=self.config.timeouts.first_token_s)
        if not isinstance(body, dict):
            raise BackendProtocolError("/api/embed did not return an object", backend=self.name)
        return checked_vectors(body.get("embeddings"), len(texts), backend=self.name)

    async def list_models(self) -> list[str]:
        return self._model_names(await self.get_json("/api/tags"), "/api/tags")

    async def model_capabilities(self, model: str) -> tuple[str, ...] | None:
        body = await self.post_json("/api/show", {"model": model})
        found = body.get("capabilities") if isinstance(body, dict) else None
        if not isinstance(found, list):
            return None  # an Ollama older than 0.6 does not say
        return tuple(c for c in found if isinstance(c, str))

    async def loaded_models(self) -> list[str]:
        """Models Ollama holds in memory now (/api/ps): these answer without a load delay."""
        return self._model_names(await self.get_json("/api/ps"), "/api/ps")

    async def running_models(self) -> list[LoadedModel]:
        """The loaded models (/api/ps) with their memory sizes and unload time."""
        body = await self.get_json("/api/ps")
        names = self._model_names(body, "/api/ps")  # checks the list and every name
        return [
            LoadedModel(name, _count(m.get("size")) or 0, _count(m.get("size_vram")) or 0,
                        m["expires_at"] if isinstance(m.get("expires_at"), str) else None)
            for name, m in zip(names, body["models"], strict=True)
        ]

    async def check_health(self) -> None:
        # /api/version is the cheapest endpoint: no disk scan of the model store.
        body = await self.get_json("/api/version")
        if not isinstance(body, dict) or not isinstance(body.get("version"), str):
            raise BackendProtocolError("/api/version did not name a version", backend=self.name)

    def _observe_prompt(self, final: dict[str, Any]) -> None:
        count, nanos = final.get("prompt_eval_count"), final.get("prompt_eval_duration")
        if self.prompt_speed is not None and isinstance(count, int) and isinstance(nanos, int):
            self.prompt_speed.observe(count, nanos / 1e9)

    async def _stream(
        self, path: str, payload: dict[str, Any], delta_of: Callable[[dict[str, Any]], Delta]
    ) -> AsyncIterator[Delta]:
        final: Delta | None = None
        called = False  # any tool call: the answer finishes "tool_calls"
        async with self.stream_lines(path, payload) as batches:
            async for lines in batches:
                for line in lines:
                    if final is not None or not line.strip():
                        # Read to the end even after `done`: a response closed early takes
                        # its connection out of the pool, and the next request pays a new one.
                        continue
                    obj = orjson.loads(line)  # malformed JSON -> BackendProtocolError (mapped)
                    if not isinstance(obj, dict):
                        raise BackendProtocolError(f"{path} streamed a non-object",
                                                   backend=self.name)
                    if "error" in obj:
                        # The runner failed after the 200 was sent (out of memory, crashed...).
                        raise BackendUnavailable(stream_error(path, obj["error"]),
                                                 backend=self.name)
                    delta = delta_of(obj)
                    called = called or bool(delta.tool_calls)
                    if obj.get("done") is True:
                        self._observe_prompt(obj)
                        delta.finish_reason = "length" if obj.get("done_reason") == "length" \
                            else "tool_calls" if called else "stop"
                        delta.prompt_tokens = _count(obj.get("prompt_eval_count"))
                        delta.completion_tokens = _count(obj.get("eval_count"))
                        final = delta
                    elif delta.text or delta.reasoning or delta.tool_calls:
                        yield delta
        if final is None:
            raise BackendProtocolError(f"{path} stream ended without done", backend=self.name)
        yield final

    def _model_names(self, body: Any, path: str) -> list[str]:
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise BackendProtocolError(f"{path} did not list models", backend=self.name)
        names: list[str] = []
        for m in models:
            name = (m.get("name") or m.get("model")) if isinstance(m, dict) else None
            if not isinstance(name, str):
                raise BackendProtocolError(f"{path} listed a nameless model", backend=self.name)
            names.append(name)
        return names


def _options(request: GenerateRequest | ChatRequest) -> dict[str, Any]:
    # Only what was asked for: Ollama's own defaults (Modelfile) stay in force otherwise.
    return {
        "num_predict": request.max_tokens,
        "temperature": request.temperature,
        **sampling_overrides(request),
    }


_CHAT_OPTIONS = ("top_k", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty",
                 "num_ctx")


def chat_payload(request: ChatRequest) -> dict[str, Any]:
    """An /api/chat body with everything `request` asks for (checked against
    OllamaBackend.chat_fields before it gets here)."""
    options = _with_sampling(_options(request), request)
    names = call_names(request.messages)
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": [_message(m, names) for m in request.messages],
        "stream": True,
        "keep_alive": KEEP_ALIVE if request.keep_alive is None else request.keep_alive,
        "options": options,
    }
    if request.tools and request.tool_choice != "none":
        payload["tools"] = [_tool(t) for t in request.tools]
    fmt = request.response_format
    if fmt is not None:
        payload["format"] = fmt.schema if fmt.type == "json_schema" else "json"
    if request.think is not None:  # Ollama's levels start at "low"
        payload["think"] = "low" if request.think == "minimal" else request.think
    _pass_through(request, payload)
    return payload


def _with_sampling(options: dict[str, Any], request: GenerateRequest | ChatRequest
                   ) -> dict[str, Any]:
    for name in _CHAT_OPTIONS:
        value = getattr(request, name)
        if value is not None:
            options[name] = value
    return options


def _pass_through(request: GenerateRequest | ChatRequest, payload: dict[str, Any]) -> None:
    if request.passthrough_kind == "ollama":
        _merge(request.passthrough, payload)


def _merge(passthrough: Passthrough, payload: dict[str, Any]) -> None:
    """Fields of Ollama's protocol we do not model, verbatim (`options.` ones into options)."""
    for key, value in passthrough:
        if key.startswith("options."):
            payload.setdefault("options", {})[key.removeprefix("options.")] = value
        else:
            payload[key] = value


def _message(m: ChatMessage, names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.images:
        out["images"] = [i.data for i in m.images]
    if m.tool_calls:
        out["tool_calls"] = [_call(c) for c in m.tool_calls]
    if m.role == "tool":
        name = m.tool_name or names.get(m.tool_call_id or "")
        if name:
            out["tool_name"] = name
    if m.reasoning:
        out["thinking"] = m.reasoning
    return out


def _call(c: ToolCall) -> dict[str, Any]:
    function: dict[str, Any] = {"name": c.name, "arguments": arguments_object(c.arguments)}
    if c.index is not None:  # as the Ollama client sent it
        function["index"] = c.index
    return {"id": c.id, "function": function}


@functools.lru_cache(maxsize=1024)
def _tool(t: Tool) -> dict[str, Any]:  # read-only: shared by every request sending `t`
    function: dict[str, Any] = {"name": t.name}
    if t.description:
        function["description"] = t.description
    if t.parameters is not None:
        function["parameters"] = t.parameters
    return {"type": "function", "function": function}


def _generate_delta(obj: dict[str, Any]) -> Delta:
    text = obj.get("response", "")
    if not isinstance(text, str):
        raise TypeError("'response' is not a string")
    return Delta(text)


class ChatReader:
    """/api/chat stream lines as Deltas; whole tool calls get an index (and an id when
    Ollama gave none) in the order they came. Ollama's own `function.index` means that
    order, but is not read: some versions omit 0 or repeat it, and a repeated index
    would join two calls into one."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, obj: dict[str, Any]) -> Delta:
        message = obj.get("message")
        if message is None:
            return Delta()
        if not isinstance(message, dict):
            raise TypeError("'message' is not an object")
        text = message.get("content") or ""
        thinking = message.get("thinking") or ""
        if not isinstance(text, str) or not isinstance(thinking, str):
            raise TypeError("'message.content' or 'message.thinking' is not a string")
        calls = message.get("tool_calls")
        if not calls:
            return Delta(text, reasoning=thinking)
        if not isinstance(calls, list):
            raise TypeError("'message.tool_calls' is not a list")
        return Delta(text, reasoning=thinking, tool_calls=tuple(self._chunk(c) for c in calls))

    def _chunk(self, call: Any) -> ToolCallChunk:
        function = call["function"]
        name = function["name"]
        if not isinstance(name, str) or not name:
            raise TypeError("a tool call has no function name")
        ident = call.get("id")
        self.calls += 1
        return ToolCallChunk(self.calls - 1, ident if isinstance(ident, str) and ident
                             else new_call_id(), name,
                             arguments_text(function.get("arguments") or {}))


def _count(value: object) -> int | None:
    # Ollama omits prompt_eval_count when the whole prompt came from its cache.
    return value if type(value) is int else None
