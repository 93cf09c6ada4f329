"""Ollama over its native API: /api/generate (raw), /api/chat, /api/embed, /api/tags, /api/ps.

Streams are NDJSON: one JSON object per line, the last one with `done: true`, `done_reason`
and token counts. Ollama reports a failure after the status line as an `{"error": ...}` line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from mimiverse.backends.base import ChatRequest, Delta, GenerateRequest, sampling_overrides
from mimiverse.backends.http import HttpBackend, checked_vectors, stream_error
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

    def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        payload: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt,
            # The prompt is already rendered (FIM template included): no Modelfile template.
            "raw": True,
            "stream": True,
            "keep_alive": KEEP_ALIVE,
            "options": _options(request),
        }
        return self._stream("/api/generate", payload, _generate_text)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "keep_alive": KEEP_ALIVE,
            "options": _options(request),
        }
        return self._stream("/api/chat", payload, _chat_text)

    async def embed_batch(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        payload = {"model": model, "input": list(texts), "keep_alive": KEEP_ALIVE}
        body = await self.post_json("/api/embed", payload,
                                    first_byte_s=self.config.timeouts.first_token_s)
        if not isinstance(body, dict):
            raise BackendProtocolError("/api/embed did not return an object", backend=self.name)
        return checked_vectors(body.get("embeddings"), len(texts), backend=self.name)

    async def list_models(self) -> list[str]:
        return self._model_names(await self.get_json("/api/tags"), "/api/tags")

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
        self, path: str, payload: dict[str, Any], text_of: Callable[[dict[str, Any]], str]
    ) -> AsyncIterator[Delta]:
        final: Delta | None = None
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
                    text = text_of(obj)
                    if obj.get("done") is True:
                        self._observe_prompt(obj)
                        final = Delta(
                            text=text,
                            finish_reason="length" if obj.get("done_reason") == "length"
                            else "stop",
                            prompt_tokens=_count(obj.get("prompt_eval_count")),
                            completion_tokens=_count(obj.get("eval_count")),
                        )
                    elif text:
                        yield Delta(text=text)
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


def _generate_text(obj: dict[str, Any]) -> str:
    text = obj.get("response", "")
    if not isinstance(text, str):
        raise TypeError("'response' is not a string")
    return text


def _chat_text(obj: dict[str, Any]) -> str:
    message = obj.get("message")
    if message is None:
        return ""
    if not isinstance(message, dict):
        raise TypeError("'message' is not an object")
    text = message.get("content") or ""  # thinking / tool-call chunks carry no content
    if not isinstance(text, str):
        raise TypeError("'message.content' is not a string")
    return text


def _count(value: object) -> int | None:
    # Ollama omits prompt_eval_count when the whole prompt came from its cache.
    return value if type(value) is int else None
