"""What the compatible protocols share: model names, body parsing, prompt routing, timing.

Model names. A client may name a task alias (`completion`, `chat`, `embedding`), a model
the settings route a task to, or any model a backend lists. Which task answers is decided
by the endpoint (a chat endpoint chats), never by the name: names only have to be known.
Backend listings are cached for `LISTING_TTL_S`, refreshed by one call shared between
concurrent requests, so an unknown name costs a backend round trip at most once per TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from mimiverse.api.errors import error_responses
from mimiverse.api.lean import LeanRoute
from mimiverse.config import TASKS, Task
from mimiverse.errors import InvalidRequest, MimiverseError, ModelNotFound
from mimiverse.fim.prompt import estimate_tokens
from mimiverse.fim.templates import FimTemplate
from mimiverse.gateway import Answer, ChatInput, Events, FimInput, Gateway, RawInput

LISTING_TTL_S = 30.0
OWNER = "mimiverse"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class KnownModel:
    name: str
    task: Task | None  # None: listed by a backend, not routed to by a task
    backend: str | None = None


class ModelCatalog:
    """The model names clients may use, with backend listings cached briefly."""

    def __init__(self, gateway: Gateway, ttl_s: float = LISTING_TTL_S) -> None:
        self.gateway = gateway
        self.ttl_s = ttl_s
        self._listed: list[KnownModel] = []
        self._listed_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None

    def configured(self) -> list[KnownModel]:
        """Task aliases first, then each task's model (a name used twice appears once)."""
        models = [KnownModel(task, task) for task in TASKS]
        models += [KnownModel(self.gateway.settings.models.route(t).model, t) for t in TASKS]
        vision = self.gateway.settings.models.vision
        if vision is not None:  # named by clients that pick a model that sees
            models += [KnownModel("vision", None), KnownModel(vision.model, None)]
        return _unique(models)

    async def all(self) -> list[KnownModel]:
        await self._fresh_listing()
        return _unique([*self.configured(), *self._listed])

    async def resolve(self, name: str | None, task: Task) -> str:
        """The configured model that answers `task` for a client that named `name`."""
        route_model = self.gateway.settings.models.route(task).model
        if name is None or name == "":
            raise InvalidRequest("model is required")
        if any(m.name == name for m in self.configured()):
            return route_model
        await self._fresh_listing()
        if any(m.name == name for m in self._listed):
            return route_model
        raise ModelNotFound(f"model '{name}' not found")

    async def task_of(self, name: str, default: Task) -> Task:
        """The task a name stands for: its alias or configured task; `default` when it names
        the default's model too, or a backend-listed model. Unknown -> ModelNotFound."""
        tasks = [m.task for m in self.configured() if m.name == name and m.task is not None]
        if tasks:
            return default if default in tasks else tasks[0]
        await self.resolve(name, default)
        return default

    async def _fresh_listing(self) -> None:
        now = time.monotonic()
        if self._listed_at is not None and now - self._listed_at < self.ttl_s:
            return
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._list_backends())
        # shield: a client leaving must not cancel the listing other requests wait on.
        await asyncio.shield(self._refresh)

    async def _list_backends(self) -> None:
        backends = list(self.gateway.router.backends.values())
        results = await asyncio.gather(
            *(asyncio.wait_for(b.list_models(), b.config.timeouts.connect_s + 1.0)
              for b in backends),
            return_exceptions=True,
        )
        listed: list[KnownModel] = []
        for backend, names in zip(backends, results, strict=True):
            if isinstance(names, BaseException):
                continue  # a backend that is down lists nothing; the others still count
            listed += [KnownModel(n, None, backend.name) for n in names]
        self._listed = listed
        self._listed_at = time.monotonic()


def _unique(models: Iterable[KnownModel]) -> list[KnownModel]:
    seen: dict[str, KnownModel] = {}
    for m in models:
        seen.setdefault(m.name, m)
    return list(seen.values())


def catalog(request: Request) -> ModelCatalog:
    found: ModelCatalog | None = getattr(request.app.state, "model_catalog", None)
    if found is None:
        found = ModelCatalog(request.app.state.gateway)
        request.app.state.model_catalog = found
    return found


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error shape (the OpenAI and Tabby routes answer errors with it)."""

    error: OpenAIErrorDetail


class OllamaError(BaseModel):
    """Ollama's error shape: the message alone."""

    error: str


def protocol_responses(model: type[BaseModel]) -> dict[int | str, Any]:
    """`responses=` for a protocol's router: its own error shape for 400 (bad body), 404
    (unknown model) and the backends' 502/503/504; ours for what the middleware answers
    before any route runs (401/403/421, 413/431, 429)."""
    responses: dict[int | str, Any] = {
        code: {"model": model, "description": why} for code, why in (
            (400, "the body is not what the protocol accepts"), (404, "unknown model"),
            (502, "the backend failed"), (503, "no backend could answer"),
            (504, "the backend timed out"),
        )
    }
    responses.update(error_responses(401, 403, 413, 421, 429, 431))
    return responses


def streamed(media_type: str) -> dict[int | str, Any]:
    """`responses=` of a route that answers JSON, or `media_type` when asked to stream."""
    return {200: {"content": {"application/json": {"schema": {"type": "object"}},
                              media_type: {"schema": {"type": "object"}}},
                  "description": f"the answer, or a stream ({media_type}) when asked"}}


def request_body(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra=` of a route that parses its body itself (with the protocol's error
    shape): the body `models` accept (any of them), self-contained (no $refs)."""
    schemas = [_inline(m.model_json_schema(ref_template="#/$defs/{model}")) for m in models]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


class ParseError(Exception):
    """The body is not JSON, or not an object: the protocol says how to answer."""


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ParseError("request body must be a JSON object")
    return body


def parse(model: type[M], body: dict[str, Any]) -> M:
    """Validate with pydantic; the protocol's route class maps ValidationError."""
    return model.model_validate(body)


Source = FimInput | RawInput | ChatInput


async def open_events(gateway: Gateway, source: Source) -> Events:
    """Open the stream for a request whichever way it is answered."""
    if isinstance(source, ChatInput):
        return await gateway.stream_chat(source)
    if isinstance(source, RawInput):
        return await gateway.stream_raw(source)
    return await gateway.stream_fim(source)


async def collect(gateway: Gateway, source: Source) -> Answer:
    """The whole answer (identical requests in flight share one upstream call)."""
    if isinstance(source, ChatInput):
        return await gateway.chat(source)
    if isinstance(source, RawInput):
        return await gateway.generate_raw(source)
    return await gateway.complete(source)


def is_fim_prompt(prompt: str, template: FimTemplate) -> bool:
    """Has the client rendered the FIM template itself (Twinny, llm-ls, Continue without
    FIM support detected)? Then the prompt goes to the model as is, not wrapped again."""
    markers = [m.strip() for m in (template.pre, template.suf, template.mid) if m.strip()]
    return bool(markers) and all(m in prompt for m in markers)


def usage(prompt_text: str, answer: Answer) -> tuple[int, int]:
    """(prompt, completion) tokens: the backend's counts when it reported them, else an
    estimate over what the client sent and what it got (no tokenizer on the request path)."""
    prompt = answer.prompt_tokens
    if prompt is None:
        prompt = estimate_tokens(prompt_text)
    completion = answer.completion_tokens
    if completion is None:
        completion = estimate_tokens(answer.text)
    return prompt, completion


def unix_now() -> int:
    return int(time.time())


ErrorMapper = Callable[[Exception], Response]


def route_class(map_error: ErrorMapper) -> type[LeanRoute]:
    """A route class that answers errors in one protocol's shape: ONE mapping per protocol.

    Bodies are parsed inside the routes (json_object + parse), so validation errors reach
    this mapping too. A client gone before the answer still goes to the app's 499 handler.
    """

    class MappedRoute(LeanRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def mapped(request: Request) -> Response:
                try:
                    return await handler(request)
                except (ValidationError, ParseError, MimiverseError) as exc:
                    return map_error(exc)

            return mapped

    return MappedRoute


def describe(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message naming each bad field and what is allowed; the first field."""
    parts: list[str] = []
    first: str | None = None
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        first = first or loc
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts), first
