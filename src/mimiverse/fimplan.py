"""What a completion becomes before any backend is called: for FIM, the prompt (template,
token budget, repository context first and the file in what is left), the request, the
optional fields it uses and its cache keys; for a raw prompt, the same checks and keys
without a template. chatplan.py does the same for chats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mimiverse.backends.base import GenerateRequest
from mimiverse.cache.keys import cache_key, is_deterministic
from mimiverse.chatplan import check_backends
from mimiverse.config import ModelRoute, Settings
from mimiverse.errors import PromptTooLong
from mimiverse.fim.postprocess import FimPostprocessor
from mimiverse.fim.prompt import conservative_tokens, lenient_tokens, trim_to_budget
from mimiverse.fim.retrieval import RepoRetriever, prompt_context
from mimiverse.fim.templates import ContextFile, FimTemplate, template_for
from mimiverse.index.filetypes import detect_language
from mimiverse.routing.router import Router


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


# GenerateRequest fields besides model, prompt and the sampling basics that change what
# the model answers (keep_alive does not: it is how long the model stays loaded).
# passthrough_kind too: one field name may mean different things in the two protocols, and
# each goes to a backend of its own kind.
_ANSWER_FIELDS = ("top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                  "repeat_penalty", "num_ctx", "passthrough", "passthrough_kind")


class CompletionPlanner:
    """Plans the completion route's requests (FIM and raw) for one gateway."""

    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.router = router
        completion = settings.models.completion
        # Resolved once: an unknown family fails at start, not on the first request.
        self.template: FimTemplate = template_for(completion.model, completion.family)

    def deterministic(self, temperature: float, seed: int | None) -> bool:
        """Whether answers at these settings may be cached (and shared in flight)."""
        return is_deterministic(temperature, seed, self.settings.cache.cache_seeded)

    async def plan(self, fim: FimInput, retriever: RepoRetriever | None) -> FimPlan:
        """The prompt for `fim`: repository context first (the index's matches, through
        `retriever`), the file in what is left."""
        settings = self.settings.repo_context
        if not (fim.repo_context and settings.enabled):
            retriever = None
        if retriever is not None and not retriever.has_repositories():
            retriever = None  # nothing indexed here for this caller: plan without context
        if retriever is None and not fim.snippets:
            return self.render(fim)
        chosen = await prompt_context(
            retriever, settings, self.template, prefix=fim.prefix, suffix=fim.suffix,
            path=fim.path, snippets=fim.snippets, total=self.prompt_budget(),
            count=self.count_tokens,
        )
        return self.render(fim, chosen.files, chosen.tokens, chosen.repo_name, chosen.path)

    def render(
        self, fim: FimInput, context: Sequence[ContextFile] = (), context_tokens: int = 0,
        repo_name: str | None = None, path: str | None = None,
    ) -> FimPlan:
        """`path` names the file in the prompt (relative to its repository), else fim.path."""
        route = self.settings.models.completion
        template = self.template
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
        if fim.language is not None:  # ends answers (blocks.py); else the path tells it
            params["language"] = fim.language
        fields = self._answer_fields(request) if fim.fields else None
        if fields:  # absent otherwise: plain requests keep the keys they always had
            params["fields"] = fields
        deterministic = self.deterministic(fim.temperature, fim.seed)
        return FimPlan(
            request=request, prefix=prefix, suffix=suffix, single_line=fim.single_line,
            language=fim.language or (detect_language(fim.path) if fim.path else None),
            key=cache_key("completion", prompt=request.prompt, **params) if deterministic
            else None,
            params_key=cache_key("completion-params", **params) if deterministic else "",
            context=tuple(context),
        )

    def _answer_fields(self, request: GenerateRequest) -> dict[str, Any]:
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

    def count_tokens(self, text: str) -> int:
        """By the completion model's tokenizer when a backend has it at hand, else a
        conservative estimate: context must never push the prompt over its budget."""
        counted = self._model_tokens(self.settings.models.completion, text)
        return conservative_tokens(text) if counted is None else counted

    def check_prompt_length(self, task: str, text: str) -> None:
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

    def raw(self, raw: RawInput) -> tuple[GenerateRequest, str | None]:
        """The request for a raw prompt (sent as given), and its cache key if any."""
        route = self.settings.models.completion
        self.check_prompt_length("completion", raw.prompt)
        request = GenerateRequest(
            model=route.model, prompt=raw.prompt,
            max_tokens=min(raw.max_tokens or route.max_tokens, route.max_tokens),
            temperature=raw.temperature, stop=raw.stop, seed=raw.seed, **raw.fields,
        )
        if request.num_ctx is not None:
            _check_num_ctx(request)
        fields = self._answer_fields(request) if raw.fields else {}
        key = cache_key("raw", model=request.model, prompt=request.prompt,
                        max_tokens=request.max_tokens, temperature=request.temperature,
                        seed=request.seed, stop=list(request.stop), **fields) \
            if self.deterministic(raw.temperature, raw.seed) else None
        return request, key


def _check_num_ctx(request: GenerateRequest) -> None:
    """A raw prompt is the client's own: refused when it surely overflows num_ctx (Ollama
    would cut its start; other backends have their own, larger window)."""
    assert request.num_ctx is not None
    tokens = lenient_tokens(request.prompt)
    if tokens + request.max_tokens > request.num_ctx:
        raise PromptTooLong(f"the prompt is about {tokens} tokens and max_tokens "
                            f"{request.max_tokens}: more than num_ctx {request.num_ctx}")
