"""The services behind every protocol: FIM, chat and embeddings through cache and router.

The HTTP routes (ours, and the OpenAI/Ollama-compatible ones) and the CLI all call these,
so planning (fimplan.py, chatplan.py), post-processing, caching, routing and timing are
reached in one place.

Every answer is a stream of TextEvents (answers.py), whether it comes from a backend, the
cache or type-ahead reuse; non-streaming callers collect it, sharing one upstream call
between identical requests in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from mimiverse.answers import (
    Answer,
    Events,
    Stored,
    TextEvent,
    chat_events,
    entry,
    final,
    ms_since,
    replay,
    replay_entry,
    stored_delta,
    text_events,
)
from mimiverse.backends.base import (
    NO_EXTRAS,
    Backend,
    ChatRequest,
    Delta,
    EmbedExtras,
    GenerateRequest,
)
from mimiverse.backends.registry import build_backend
from mimiverse.cache.base import Cache, build_cache
from mimiverse.cache.keys import cache_key
from mimiverse.cache.typeahead import TypeaheadIndex
from mimiverse.chatplan import ChatInput, ChatPlan, check_backends, plan_chat
from mimiverse.config import Settings
from mimiverse.errors import AllBackendsFailed, StreamInterrupted, Unsupported
from mimiverse.fim.postprocess import FimPostprocessor
from mimiverse.fim.retrieval import RepoRetriever
from mimiverse.fim.templates import FimTemplate
from mimiverse.fimplan import CompletionPlanner, FimInput, FimPlan, RawInput
from mimiverse.routing.capabilities import Capabilities
from mimiverse.routing.router import Router
from mimiverse.routing.singleflight import SingleFlight
from mimiverse.telemetry import NO_OBSERVER, Observer, observed_embedding, observed_stream

CACHE_BACKEND = "cache"  # the `backend` reported for answers served without a model call


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    model: str
    backend: str
    latency_ms: float
    cached: bool = False


__all__ = ["Answer", "ChatInput", "Embeddings", "Events", "FimInput", "Gateway", "RawInput",
           "TextEvent"]


class Gateway:
    def __init__(
        self,
        settings: Settings,
        backends: dict[str, Backend] | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.settings = settings
        if backends is None:
            backends = {b.name: build_backend(b) for b in settings.backends}
        self.router = Router(settings, backends)
        self.capabilities = Capabilities(self.router)
        self.cache = cache or build_cache(settings.cache)
        self.typeahead = TypeaheadIndex(self.cache)
        self._flights: SingleFlight[Answer] = SingleFlight()
        self.observer: Observer = NO_OBSERVER  # see observe()
        self.planner = CompletionPlanner(settings, self.router)
        # Set by create_app once the codebase service exists: the index's matches for FIM.
        self.retriever: RepoRetriever | None = None

    async def aclose(self) -> None:
        await self.router.aclose()
        await self.cache.aclose()

    def observe(self, observer: Observer) -> None:
        """Report answers, and the router's choices, to `observer` from now on."""
        self.observer = self.router.observer = observer

    # -- FIM -------------------------------------------------------------------------

    async def plan_fim(self, fim: FimInput) -> FimPlan:
        """The prompt for `fim`: repository context first, the file in what is left."""
        return await self.planner.plan(fim, self.retriever)

    @property
    def fim_template(self) -> FimTemplate:
        """The completion route's FIM template (the planner's)."""
        return self.planner.template

    def prompt_budget(self) -> int:
        """FIM prompt tokens (see CompletionPlanner.prompt_budget)."""
        return self.planner.prompt_budget()

    @observed_stream("completion")
    async def stream_fim(
        self, fim: FimInput, plan: FimPlan | None = None, exclude: frozenset[str] = frozenset()
    ) -> Events:
        """Open a completion: from the cache, type-ahead reuse, or a backend's first token.

        Returns its events; failures before the first token raise here, not in the stream.
        """
        started = time.perf_counter()
        plan = plan or await self.plan_fim(fim)
        if plan.key is not None:
            hit = await self._cached_events(plan.key, started)
            if hit is not None:
                return hit
            rest = await self.typeahead.lookup(plan.params_key, fim.prefix, fim.suffix)
            if rest is not None:
                answer = Answer(rest, plan.request.model, CACHE_BACKEND, ms_since(started),
                                cached=True, finish_reason="stop")
                return replay([TextEvent("delta", rest, model=answer.model)], answer)
        attempts: list[FimPostprocessor] = []

        def start(backend: Backend, model: str) -> AsyncIterator[Delta]:
            attempts.append(plan.postprocessor())  # fresh state for each attempt
            return _generate(backend, plan.request, used)

        used = plan.request.used_fields() if fim.fields else []

        # The same file goes to the same backend while it can take it: its prompt cache
        # holds this file's earlier prompts.
        stream = await self.router.open_stream("completion", start, exclude,
                                               affinity=fim.path)
        events = text_events(stream, started, attempts[-1])
        if plan.key is None:
            return events

        async def remember(answer: Answer) -> None:
            await self.typeahead.remember(plan.params_key, fim.prefix, fim.suffix, answer.text)

        return self._storing(events, plan.key, remember)

    async def complete(self, fim: FimInput) -> Answer:
        plan = await self.plan_fim(fim)
        return await self._collect(plan.key, lambda skip: self.stream_fim(fim, plan, skip))

    # -- raw generation --------------------------------------------------------------

    @observed_stream("completion")
    async def stream_raw(
        self, raw: RawInput, planned: tuple[GenerateRequest, str | None] | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Events:
        """The prompt goes to the completion model unchanged: no template, no FIM
        post-processing; cached like FIM when deterministic."""
        started = time.perf_counter()
        request, key = planned or self.planner.raw(raw)
        if key is not None:
            hit = await self._cached_events(key, started)
            if hit is not None:
                return hit

        def start(backend: Backend, model: str) -> AsyncIterator[Delta]:
            return _generate(backend, request, used)

        used = request.used_fields() if raw.fields else []

        events = text_events(await self.router.open_stream("completion", start, exclude),
                             started)
        return events if key is None else self._storing(events, key)

    async def generate_raw(self, raw: RawInput) -> Answer:
        planned = self.planner.raw(raw)
        return await self._collect(planned[1],
                                   lambda skip: self.stream_raw(raw, planned, skip))

    # -- chat ------------------------------------------------------------------------

    async def plan_chat(self, chat: ChatInput) -> ChatPlan:
        return await plan_chat(self.router, self.capabilities, chat,
                               self.planner.check_prompt_length)

    def _chat_key(self, request: ChatRequest) -> str | None:
        if not self.planner.deterministic(request.temperature, request.seed):
            return None
        # The whole request: tools, schemas, images and every sampling field change answers.
        return cache_key("chat", request=request)

    @observed_stream("chat")
    async def stream_chat(
        self, chat: ChatInput, plan: ChatPlan | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Events:
        started = time.perf_counter()
        plan = plan or await self.plan_chat(chat)
        request, used = plan.request, plan.used
        key = self._chat_key(request)
        if key is not None:
            hit = await self._cached_events(key, started)
            if hit is not None:
                return hit

        def start(backend: Backend, model: str) -> AsyncIterator[Delta]:
            missing = backend.chat_gaps(used) if used else None
            if missing:  # another candidate can: the router moves on to it
                return _refused(f"cannot honour {', '.join(missing)}", backend.name)
            return backend.stream_chat(request)

        stream = await self.router.open_stream("chat", start, exclude, plan.route)
        events = chat_events(stream, started)
        return events if key is None else self._storing(events, key)

    async def chat(self, chat: ChatInput) -> Answer:
        plan = await self.plan_chat(chat)
        return await self._collect(self._chat_key(plan.request),
                                   lambda skip: self.stream_chat(chat, plan, skip))

    # -- embeddings ------------------------------------------------------------------

    @observed_embedding
    async def embed(self, texts: Sequence[str], extras: EmbedExtras = NO_EXTRAS
                    ) -> Embeddings:
        """Embeddings are always cached, per text, so overlapping batches reuse them.
        `extras`: the client's fields we do not model, refused (400 naming them) when no
        backend of the route speaks the client's protocol."""
        started = time.perf_counter()
        route = self.settings.models.embedding
        model = route.model
        used = extras.used_fields()
        if used:
            check_backends(self.router, "embedding", route, used)
        # Fields that may change a vector join its key (absent when none: plain requests
        # keep the keys they always had), with their protocol: one name may mean two things.
        fields = extras.answer_fields()
        parts = {"fields": fields, "kind": extras.kind} if fields else {}
        unique = list(dict.fromkeys(texts))
        keys = {t: cache_key("embedding", model=model, text=t, **parts) for t in unique}
        found = await asyncio.gather(*(self.cache.get(keys[t]) for t in unique))
        vectors: dict[str, list[float]] = {}
        for text, value in zip(unique, found, strict=True):
            vector = value.get("vector") if value else None
            if value and isinstance(vector, list) and vector:
                vectors[text] = vector
                # Named as the model that gave it (entries from before this: the route's).
                model = str(value.get("model", route.model))
        missing = [t for t in unique if t not in vectors]
        backend_name = CACHE_BACKEND
        if missing:
            fresh, backend, model = await self.router.embed(missing, extras)
            backend_name = backend.name
            vectors.update(zip(missing, fresh, strict=True))
            await asyncio.gather(*(self.cache.set(keys[t], {"vector": v, "model": model})
                                   for t, v in zip(missing, fresh, strict=True)))
        return Embeddings([vectors[t] for t in texts], model, backend_name, ms_since(started),
                          cached=not missing)

    # -- shared ----------------------------------------------------------------------

    async def _collect(
        self, key: str | None, open_events: Callable[[frozenset[str]], Awaitable[Events]]
    ) -> Answer:
        """A non-streamed answer. Nothing reaches the client before it is whole, so a
        backend that fails mid-answer is no reason to stop: the next one answers instead
        (`open_events(exclude)` skips those that failed). When none is left, the first
        failure is what the client hears."""

        async def run() -> Answer:
            failed: list[StreamInterrupted] = []
            while True:
                try:
                    events = await open_events(frozenset(e.backend for e in failed))
                except AllBackendsFailed:
                    if failed:
                        raise failed[0] from None
                    raise
                try:
                    return await final(events)
                except StreamInterrupted as exc:
                    failed.append(exc)

        if key is None:
            return await run()
        return await self._flights.do(key, run)

    async def _cached_events(self, key: str, started: float) -> Events | None:
        return replay_entry(await self.cache.get(key), started)

    async def _storing(
        self, events: Events, key: str,
        also: Callable[[Answer], Awaitable[None]] | None = None,
    ) -> Events:
        """Pass events through; when the stream completes, cache it for replay.

        Errors and streams cut short (an exception, a client gone) are never stored.
        """
        deltas: list[Stored] = []
        async for event in events:
            if event.answer is None:
                deltas.append(stored_delta(event))
            else:
                await self.cache.set(key, entry(deltas, event.answer))
                if also is not None:
                    await also(event.answer)
            yield event


async def _refused(reason: str, backend: str) -> AsyncIterator[Delta]:
    raise Unsupported(reason, backend=backend)
    yield Delta()  # unreachable: makes this an async generator


def _generate(backend: Backend, request: GenerateRequest, used: list[str]
              ) -> AsyncIterator[Delta]:
    missing = backend.chat_gaps(used) if used else None
    if missing:  # another candidate can: the router moves on to it
        return _refused(f"cannot honour {', '.join(missing)}", backend.name)
    return backend.stream_generate(request)
