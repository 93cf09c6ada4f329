"""The services behind every protocol: FIM, chat and embeddings through cache and router.

The HTTP routes (ours, and the OpenAI/Ollama-compatible ones) and the CLI all call these,
so prompt rendering, post-processing, caching, routing and timing live in one place.

Every answer is a stream of TextEvents (answers.py), whether it comes from a backend, the
cache or type-ahead reuse; non-streaming callers collect it, sharing one upstream call
between identical requests in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
from mimiverse.backends.base import Backend, ChatRequest, Delta, GenerateRequest
from mimiverse.backends.registry import build_backend
from mimiverse.cache.base import Cache, build_cache
from mimiverse.cache.keys import cache_key, is_deterministic
from mimiverse.cache.typeahead import TypeaheadIndex
from mimiverse.chatplan import ChatInput, ChatPlan, check_backends, plan_chat
from mimiverse.config import ModelRoute, Settings
from mimiverse.errors import AllBackendsFailed, PromptTooLong, StreamInterrupted, Unsupported
from mimiverse.fim.postprocess import FimPostprocessor
from mimiverse.fim.prompt import conservative_tokens, lenient_tokens, trim_to_budget
from mimiverse.fim.retrieval import RepoRetriever, prompt_context
from mimiverse.fim.templates import ContextFile, FimTemplate, template_for
from mimiverse.index.filetypes import detect_language
from mimiverse.routing.capabilities import Capabilities
from mimiverse.routing.router import Router
from mimiverse.routing.singleflight import SingleFlight
from mimiverse.telemetry import NO_OBSERVER, Observer, observed_embedding, observed_stream

CACHE_BACKEND = "cache"  # the `backend` reported for answers served without a model call


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
    # Code the client sent along (Tabby declarations/snippets, llama.cpp input_extra):
    # shown to the model before the current file, ahead of the index's own matches.
    snippets: tuple[ContextFile, ...] = ()
    repo_context: bool = True  # add the index's best matches when a repository is indexed
    # Further GenerateRequest fields by name (top_k, num_ctx, keep_alive, passthrough, ...).
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RawInput:
    """A prompt sent to the completion model exactly as given (Ollama's `raw: true`)."""

    prompt: str
    max_tokens: int | None = None
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # as FimInput's


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    model: str
    backend: str
    latency_ms: float
    cached: bool = False


@dataclass(frozen=True, slots=True)
class FimPlan:
    """Everything decided before a backend is called."""

    request: GenerateRequest
    prefix: str  # trimmed to the budget, as the model sees it
    suffix: str
    single_line: bool | None
    key: str | None  # cache key, when the answer is deterministic
    params_key: str  # what type-ahead reuse must match besides prefix and suffix
    context: tuple[ContextFile, ...] = ()  # repository snippets in the prompt, in order
    language: str | None = None  # given, or told by the file's extension

    def postprocessor(self) -> FimPostprocessor:
        return FimPostprocessor(self.prefix, self.suffix, self.request.stop,
                                single_line=self.single_line, language=self.language)


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
        completion = settings.models.completion
        # Resolved once: an unknown family fails at start, not on the first request.
        self.fim_template: FimTemplate = template_for(completion.model, completion.family)
        # Set by create_app once the codebase service exists: the index's matches for FIM.
        self.retriever: RepoRetriever | None = None

    async def aclose(self) -> None:
        await self.router.aclose()
        await self.cache.aclose()

    def observe(self, observer: Observer) -> None:
        """Report answers, and the router's choices, to `observer` from now on."""
        self.observer = self.router.observer = observer

    def _deterministic(self, temperature: float, seed: int | None) -> bool:
        return is_deterministic(temperature, seed, self.settings.cache.cache_seeded)

    # -- FIM -------------------------------------------------------------------------

    async def plan_fim(self, fim: FimInput) -> FimPlan:
        """The prompt for `fim`: repository context first, the file in what is left."""
        settings = self.settings.repo_context
        retriever = self.retriever if fim.repo_context and settings.enabled else None
        if retriever is not None and not retriever.has_repositories():
            retriever = None  # nothing indexed here for this caller: plan without context
        if retriever is None and not fim.snippets:
            return self.render_fim(fim)
        chosen = await prompt_context(
            retriever, settings, self.fim_template, prefix=fim.prefix, suffix=fim.suffix,
            path=fim.path, snippets=fim.snippets, total=self.prompt_budget(),
            count=self._count_tokens,
        )
        return self.render_fim(fim, chosen.files, chosen.tokens, chosen.repo_name, chosen.path)

    def render_fim(
        self, fim: FimInput, context: Sequence[ContextFile] = (), context_tokens: int = 0,
        repo_name: str | None = None, path: str | None = None,
    ) -> FimPlan:
        """`path` names the file in the prompt (relative to its repository), else fim.path."""
        route = self.settings.models.completion
        template = self.fim_template
        max_tokens = min(fim.max_tokens or route.max_tokens, route.max_tokens)
        budget = self.prompt_budget()
        num_ctx = fim.fields.get("num_ctx") if fim.fields else None
        if num_ctx is not None:  # the client's context window holds prompt and answer
            budget = min(budget, max(0, num_ctx - max_tokens))
        prefix, suffix = trim_to_budget(fim.prefix, fim.suffix, budget - context_tokens)
        stops = tuple(dict.fromkeys((*template.stop, *fim.stop)))
        request = GenerateRequest(
            model=route.model,
            prompt=template.render(prefix, suffix, path=path or fim.path, context=context,
                                   repo_name=repo_name if context else None),
            max_tokens=max_tokens,
            temperature=fim.temperature,
            stop=stops,
            seed=fim.seed,
            **fim.fields,
        )
        params = {
            "model": request.model, "family": template.family, "max_tokens": request.max_tokens,
            "temperature": request.temperature, "seed": request.seed, "stop": list(stops),
            "single_line": fim.single_line, "path": fim.path,
            # Type-ahead reuse must not carry an answer across different context.
            "context": [[c.path, c.text] for c in context],
        }
        fields = self._generate_fields(request) if fim.fields else None
        if fields:  # absent otherwise: plain requests keep the keys they always had
            params["fields"] = fields
        deterministic = self._deterministic(fim.temperature, fim.seed)
        return FimPlan(
            request=request, prefix=prefix, suffix=suffix, single_line=fim.single_line,
            language=fim.language or (detect_language(fim.path) if fim.path else None),
            key=cache_key("completion", prompt=request.prompt, **params) if deterministic
            else None,
            params_key=cache_key("completion-params", **params) if deterministic else "",
            context=tuple(context),
        )


    def _generate_fields(self, request: GenerateRequest) -> dict[str, Any]:
        """The optional fields of `request` that change its answer (for its cache key),
        after refusing them when no backend of the completion route can honour them."""
        used = request.used_fields()
        if used:
            route = self.settings.models.completion
            check_backends(self.router, "completion", route, used)
        return {n: getattr(request, n) for n in _ANSWER_FIELDS
                if getattr(request, n) not in (None, ())}

    def prompt_budget(self) -> int:
        """FIM prompt tokens: the route's ceiling, or less where the first backend of the
        route reads prompts slowly (its own cap, or what it reads in its target time)."""
        ceiling = self.settings.models.completion.max_prompt_tokens
        first = self.router.backends[self.settings.models.completion.backends[0]]
        own = first.prompt_budget()
        return ceiling if own is None else min(ceiling, own)

    def _model_tokens(self, route: ModelRoute, text: str) -> int | None:
        """`text`'s tokens by the route's model, when one of its backends has the tokenizer."""
        for name in route.backends:
            counted = self.router.backends[name].count_tokens(text)
            if counted is not None:
                return counted
        return None

    def _count_tokens(self, text: str) -> int:
        """By the completion model's tokenizer when a backend has it at hand, else a
        conservative estimate: context must never push the prompt over its budget."""
        counted = self._model_tokens(self.settings.models.completion, text)
        return conservative_tokens(text) if counted is None else counted

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

    def _check_prompt_length(self, task: str, text: str) -> None:
        """PromptTooLong when `text` surely has more tokens than the route (a task's, or
        "vision") allows: at 4 bytes a token (few texts are denser, so nothing that fits
        is refused), then by the model's own tokenizer where a backend has it at hand."""
        route = self.router.named_route(task)
        assert route is not None
        estimate = lenient_tokens(text)
        if estimate <= route.max_prompt_tokens:
            return
        counted = self._model_tokens(route, text)
        counted = estimate if counted is None else counted
        if counted > route.max_prompt_tokens:
            raise PromptTooLong(
                f"the prompt is about {counted} tokens; the {task} model {route.model!r} "
                f"takes at most {route.max_prompt_tokens} (models.{task}.max_prompt_tokens)"
            )

    def _raw_plan(self, raw: RawInput) -> tuple[GenerateRequest, str | None]:
        route = self.settings.models.completion
        self._check_prompt_length("completion", raw.prompt)
        request = GenerateRequest(
            model=route.model, prompt=raw.prompt,
            max_tokens=min(raw.max_tokens or route.max_tokens, route.max_tokens),
            temperature=raw.temperature, stop=raw.stop, seed=raw.seed, **raw.fields,
        )
        if request.num_ctx is not None:
            _check_num_ctx(request)
        fields = self._generate_fields(request) if raw.fields else {}
        key = cache_key("raw", model=request.model, prompt=request.prompt,
                        max_tokens=request.max_tokens, temperature=request.temperature,
                        seed=request.seed, stop=list(request.stop), **fields) \
            if self._deterministic(raw.temperature, raw.seed) else None
        return request, key

    @observed_stream("completion")
    async def stream_raw(
        self, raw: RawInput, planned: tuple[GenerateRequest, str | None] | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Events:
        """The prompt goes to the completion model unchanged: no template, no FIM
        post-processing; cached like FIM when deterministic."""
        started = time.perf_counter()
        request, key = planned or self._raw_plan(raw)
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
        planned = self._raw_plan(raw)
        return await self._collect(planned[1],
                                   lambda skip: self.stream_raw(raw, planned, skip))

    # -- chat ------------------------------------------------------------------------

    async def plan_chat(self, chat: ChatInput) -> ChatPlan:
        return await plan_chat(self.router, self.capabilities, chat, self._check_prompt_length)

    def _chat_key(self, request: ChatRequest) -> str | None:
        if not self._deterministic(request.temperature, request.seed):
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
    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Embeddings are always cached, per text, so overlapping batches reuse them."""
        started = time.perf_counter()
        model = self.settings.models.embedding.model
        unique = list(dict.fromkeys(texts))
        keys = {t: cache_key("embedding", model=model, text=t) for t in unique}
        found = await asyncio.gather(*(self.cache.get(keys[t]) for t in unique))
        vectors: dict[str, list[float]] = {}
        for text, value in zip(unique, found, strict=True):
            vector = value.get("vector") if value else None
            if isinstance(vector, list) and vector:
                vectors[text] = vector
        missing = [t for t in unique if t not in vectors]
        backend_name = CACHE_BACKEND
        if missing:
            fresh, backend, model = await self.router.embed(missing)
            backend_name = backend.name
            vectors.update(zip(missing, fresh, strict=True))
            await asyncio.gather(*(self.cache.set(keys[t], {"vector": v})
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


# GenerateRequest fields besides model, prompt and the sampling basics that change what
# the model answers (keep_alive does not: it is how long the model stays loaded).
# passthrough_kind too: one field name may mean different things in the two protocols, and
# each goes to a backend of its own kind.
_ANSWER_FIELDS = ("top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                  "repeat_penalty", "num_ctx", "passthrough", "passthrough_kind")


def _generate(backend: Backend, request: GenerateRequest, used: list[str]
              ) -> AsyncIterator[Delta]:
    missing = backend.chat_gaps(used) if used else None
    if missing:  # another candidate can: the router moves on to it
        return _refused(f"cannot honour {', '.join(missing)}", backend.name)
    return backend.stream_generate(request)


def _check_num_ctx(request: GenerateRequest) -> None:
    """A raw prompt is the client's own: refused when it surely overflows num_ctx (Ollama
    would cut its start; other backends have their own, larger window)."""
    assert request.num_ctx is not None
    tokens = lenient_tokens(request.prompt)
    if tokens + request.max_tokens > request.num_ctx:
        raise PromptTooLong(f"the prompt is about {tokens} tokens and max_tokens "
                            f"{request.max_tokens}: more than num_ctx {request.num_ctx}")
