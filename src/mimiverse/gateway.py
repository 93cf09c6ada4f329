"""The services behind every protocol: FIM, chat and embeddings through the router.

The HTTP routes (ours, and later OpenAI/Ollama-compatible ones) and the CLI all call these,
so prompt rendering, post-processing, routing and timing live in one place.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mimiverse.backends.base import Backend, ChatMessage, ChatRequest, Delta, GenerateRequest
from mimiverse.backends.registry import build_backend
from mimiverse.config import Settings
from mimiverse.fim.postprocess import FimPostprocessor
from mimiverse.fim.prompt import trim_to_budget
from mimiverse.fim.templates import FimTemplate, template_for
from mimiverse.routing.router import RoutedStream, Router


@dataclass(frozen=True, slots=True)
class FimInput:
    prefix: str
    suffix: str = ""
    language: str | None = None
    path: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    single_line: bool | None = None


@dataclass(frozen=True, slots=True)
class ChatInput:
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(slots=True)
class Answer:
    """The result of a completion or chat, streamed or not."""

    text: str
    model: str
    backend: str
    latency_ms: float
    cached: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    model: str
    backend: str
    latency_ms: float
    cached: bool = False


@dataclass(slots=True)
class TextEvent:
    """One streamed event: a text delta, or (kind="done") the final answer."""

    kind: Literal["delta", "done"]
    text: str = ""
    answer: Answer | None = field(default=None)


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


class Gateway:
    def __init__(self, settings: Settings, backends: dict[str, Backend] | None = None) -> None:
        self.settings = settings
        if backends is None:
            backends = {b.name: build_backend(b) for b in settings.backends}
        self.router = Router(settings, backends)
        completion = settings.models.completion
        # Resolved once: an unknown family fails at start, not on the first request.
        self.fim_template: FimTemplate = template_for(completion.model, completion.family)

    async def aclose(self) -> None:
        await self.router.aclose()

    # -- FIM -------------------------------------------------------------------------

    def fim_request(self, fim: FimInput, model: str) -> tuple[GenerateRequest, FimPostprocessor]:
        route = self.settings.models.completion
        max_tokens = min(fim.max_tokens or route.max_tokens, route.max_tokens)
        prefix, suffix = trim_to_budget(fim.prefix, fim.suffix, route.max_prompt_tokens)
        template = self.fim_template
        stops = tuple(dict.fromkeys((*template.stop, *fim.stop)))
        request = GenerateRequest(
            model=model,
            prompt=template.render(prefix, suffix, path=fim.path),
            max_tokens=max_tokens,
            temperature=fim.temperature,
            stop=stops,
            seed=fim.seed,
        )
        post = FimPostprocessor(prefix, suffix, stops, single_line=fim.single_line)
        return request, post

    async def open_fim(self, fim: FimInput) -> tuple[RoutedStream, FimPostprocessor]:
        holder: list[FimPostprocessor] = []

        def start(backend: Backend, model: str) -> AsyncIterator[Delta]:
            request, post = self.fim_request(fim, model)
            holder[:] = [post]
            return backend.stream_generate(request)

        stream = await self.router.open_stream("completion", start)
        return stream, holder[0]

    async def fim_events(
        self, stream: RoutedStream, post: FimPostprocessor, started: float
    ) -> AsyncIterator[TextEvent]:
        """Post-processed deltas, then the final answer; stops the upstream once a rule fires."""
        parts: list[str] = []
        last = Delta()
        try:
            async for delta in stream:
                last = delta
                text = post.feed(delta.text)
                if text:
                    parts.append(text)
                    yield TextEvent("delta", text)
                if post.done:
                    last.finish_reason = "stop"
                    break
            tail = post.finish()
            if tail:
                parts.append(tail)
                yield TextEvent("delta", tail)
        finally:
            await stream.aclose()
        yield TextEvent("done", answer=Answer(
            text="".join(parts), model=stream.model, backend=stream.backend.name,
            latency_ms=_ms_since(started), finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
        ))

    async def complete(self, fim: FimInput) -> Answer:
        started = time.perf_counter()
        stream, post = await self.open_fim(fim)
        return await _final(self.fim_events(stream, post, started))

    # -- chat ------------------------------------------------------------------------

    async def open_chat(self, chat: ChatInput) -> RoutedStream:
        route = self.settings.models.chat

        def start(backend: Backend, model: str) -> AsyncIterator[Delta]:
            return backend.stream_chat(ChatRequest(
                model=model, messages=chat.messages,
                max_tokens=min(chat.max_tokens or route.max_tokens, route.max_tokens),
                temperature=chat.temperature, stop=chat.stop, seed=chat.seed,
            ))

        return await self.router.open_stream("chat", start)

    async def chat_events(self, stream: RoutedStream, started: float) -> AsyncIterator[TextEvent]:
        parts: list[str] = []
        last = Delta()
        try:
            async for delta in stream:
                last = delta
                if delta.text:
                    parts.append(delta.text)
                    yield TextEvent("delta", delta.text)
        finally:
            await stream.aclose()
        yield TextEvent("done", answer=Answer(
            text="".join(parts), model=stream.model, backend=stream.backend.name,
            latency_ms=_ms_since(started), finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
        ))

    async def chat(self, chat: ChatInput) -> Answer:
        started = time.perf_counter()
        return await _final(self.chat_events(await self.open_chat(chat), started))

    # -- embeddings ------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        started = time.perf_counter()
        vectors, backend, model = await self.router.embed(texts)
        return Embeddings(vectors, model, backend.name, _ms_since(started))


async def _final(events: AsyncIterator[TextEvent]) -> Answer:
    async for event in events:
        if event.answer is not None:
            return event.answer
    raise AssertionError("event stream ended without a final answer")
