"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, ...) over /v1/*.

Completions go to /v1/completions with the already rendered prompt, chat to
/v1/chat/completions; both stream Server-Sent Events: `data: {chunk}` events separated by
blank lines, `: comment` lines, and `data: [DONE]` at the end.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import orjson

from mimiverse.backends.base import ChatRequest, Delta, GenerateRequest, sampling_overrides
from mimiverse.backends.http import HttpBackend, checked_vectors, stream_error
from mimiverse.config import Task
from mimiverse.errors import BackendProtocolError, BackendUnavailable

# Asks for a final chunk with token counts (`choices: []`, `usage: {...}`). vLLM, llama.cpp
# server and LM Studio accept it; servers that predate it ignore unknown fields.
_STREAM_OPTIONS = {"include_usage": True}


class OpenAIBackend(HttpBackend):
    kind: ClassVar[str] = "openai"
    tasks: ClassVar[frozenset[Task]] = frozenset({"completion", "chat", "embedding"})

    def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        payload = _sampling(request)
        payload["prompt"] = request.prompt
        return self._stream("/v1/completions", payload, _completion_text)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        payload = _sampling(request)
        payload["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        return self._stream("/v1/chat/completions", payload, _chat_text)

    async def embed_batch(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        payload = {"model": model, "input": list(texts), "encoding_format": "float"}
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
        self, path: str, payload: dict[str, Any], text_of: Callable[[dict[str, Any]], str]
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
                    text = text_of(choice)
                    if text:
                        yield Delta(text=text)
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
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


def _completion_text(choice: dict[str, Any]) -> str:
    text = choice.get("text") or ""
    if not isinstance(text, str):
        raise TypeError("'text' is not a string")
    return text


def _chat_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise TypeError("'delta' is not an object")
    text = delta.get("content") or ""  # role-only, tool-call and reasoning chunks: no content
    if not isinstance(text, str):
        raise TypeError("'delta.content' is not a string")
    return text


def _vector(value: Any) -> Any:
    if isinstance(value, str):
        # encoding_format=base64 (a server that ignored our "float"): little-endian float32.
        raw = base64.b64decode(value, validate=True)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return value


def _count(value: object) -> int | None:
    return value if type(value) is int else None
