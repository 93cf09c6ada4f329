"""The OpenAI API: /v1/completions (FIM with `suffix`), /v1/chat/completions,
/v1/embeddings, /v1/models — objects exactly as OpenAI defines them.

Decisions where the OpenAI API leaves room:
- `model` is required everywhere (as OpenAI does); it must be a known name (see
  shared.ModelCatalog); the endpoint decides the task, and `model` in the answer names the
  model that answered.
- /v1/completions: `prompt` + `suffix` is FIM through our template; a prompt without
  `suffix` is FIM with an empty suffix, unless the client already rendered our family's FIM
  tokens into it (Twinny, llm-ls): then it is sent as is, with the family's stop tokens.
- Defaults differ from OpenAI's on purpose: no `max_tokens` means the configured default
  (OpenAI's 16 is too short for code), no `temperature` means 0 (greedy, cacheable).
- Only what we can honour is accepted: n=1, echo=false, logprobs=null, best_of=1;
  `dimensions` on embeddings is refused. /v1/completions sends top_p, the penalties and
  the top_k/min_p/repetition_penalty extensions to the backend in its kind's spelling
  (a kind without one is refused, naming it and the backend); its unknown fields, like
  chat's (api/compat/openai_chat.py) and those of /v1/embeddings (`user`, ...), pass
  through to OpenAI backends or are refused.
- stream_options takes include_usage and include_obfuscation: false (no padding is
  added); any other key, or true there, is refused, naming it.
- `usage` counts come from the backend when it reported them, else estimates.
- Requests whose body has `segments` are Tabby's and are answered by api/compat/tabby.py.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from starlette.responses import Response

from mimiverse.api.assist import codebase_switch, mark_sources
from mimiverse.api.chat_fields import SamplingExtras, Strict, passthrough_fields
from mimiverse.api.compat import tabby
from mimiverse.api.compat.openai_chat import ChatFields, delta_object, message_object
from mimiverse.api.compat.openai_chat import finish as chat_finish
from mimiverse.api.compat.shared import (
    OWNER,
    KnownModel,
    OpenAIError,
    ParseError,
    catalog,
    collect,
    describe,
    is_fim_prompt,
    json_object,
    open_events,
    parse,
    protocol_responses,
    request_body,
    route_class,
    streamed,
    unix_now,
    usage,
)
from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.errors import error_type, status_for
from mimiverse.api.limits import MAX_TEXT, EmbedText, NumbersNotBooleans, StopText
from mimiverse.backends.base import EmbedExtras
from mimiverse.errors import ImageTooLarge, MimiverseError, ModelNotFound, RequestError
from mimiverse.fim.prompt import estimate_tokens
from mimiverse.gateway import Answer, ChatInput, Events, FimInput, Gateway, RawInput, TextEvent
from mimiverse.routing.capabilities import reported

Stops = StopText | Annotated[list[StopText], Field(max_length=64)] | None


# -- errors: the one mapping for this protocol --------------------------------------------

def error_response(status: int, message: str, *, kind: str, param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": error_object(message, kind=kind, param=param, code=code)},
                        status_code=status)


def error_object(message: str, *, kind: str, param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": kind, "param": param, "code": code}


def mimiverse_error(exc: MimiverseError) -> tuple[int, dict[str, Any]]:
    status = status_for(exc)
    if isinstance(exc, ModelNotFound):
        return status, error_object(str(exc), kind="invalid_request_error", param="model",
                                    code="model_not_found")
    if isinstance(exc, ImageTooLarge):
        return status, error_object(str(exc), kind="invalid_request_error",
                                    code="image_too_large")
    if isinstance(exc, RequestError):  # OpenAI answers every other bad request with 400
        return 400, error_object(str(exc), kind="invalid_request_error")
    return status, error_object(str(exc), kind="server_error", code=error_type(exc))


def map_error(exc: Exception) -> Response:
    if isinstance(exc, ValidationError):
        message, param = describe(exc)
        return error_response(400, message, kind="invalid_request_error", param=param)
    if isinstance(exc, ParseError):
        return error_response(400, str(exc), kind="invalid_request_error")
    assert isinstance(exc, MimiverseError)
    status, body = mimiverse_error(exc)
    return JSONResponse({"error": body}, status_code=status)


router = APIRouter(prefix="/v1", tags=["openai"], route_class=route_class(map_error),
                   responses=protocol_responses(OpenAIError))


# -- request bodies -----------------------------------------------------------------------

def _documented(allowed: int | bool) -> Any:
    """A field accepted (for the protocol's own refusal message) but only with `allowed`
    or null: what the OpenAPI document says it takes."""
    return Field(None, json_schema_extra={"enum": [allowed, None]})


def _only(allowed: object, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None and value != allowed:
            raise ValueError(f"only {what} is supported")
        return value
    return check


class StreamOptions(Strict):
    """Other keys are refused, naming them. include_obfuscation asks OpenAI to pad each
    streamed chunk against length side channels; no padding is ever added here, so
    `false` is what happens and `true` is refused (an answer on loopback or a LAN gains
    nothing from it)."""

    include_usage: bool = False
    include_obfuscation: bool | None = _documented(False)

    _obfuscation = field_validator("include_obfuscation")(
        _only(False, "include_obfuscation=false (no padding is added)"))


class _Body(NumbersNotBooleans):
    model_config = ConfigDict(extra="allow")  # passed through or refused, never dropped

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    stop: Stops = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = _documented(1)

    _n = field_validator("n")(_only(1, "n=1"))

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionBody(SamplingExtras, _Body):
    model_config = ConfigDict(extra="allow")  # passed through or refused, never dropped

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = ""
    suffix: str | None = Field(None, max_length=MAX_TEXT)
    echo: bool | None = _documented(False)
    logprobs: int | None = Field(None, json_schema_extra={"enum": [None]})
    best_of: int | None = _documented(1)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)

    _echo = field_validator("echo")(_only(False, "echo=false"))
    _logprobs = field_validator("logprobs")(_only(None, "logprobs=null"))
    _best_of = field_validator("best_of")(_only(1, "best_of=1"))

    @field_validator("prompt")
    @classmethod
    def _prompt_size(cls, value: str | list[str]) -> str | list[str]:
        text = value if isinstance(value, str) else value[0]
        if len(text) > MAX_TEXT:
            raise ValueError(f"prompt is longer than {MAX_TEXT} characters")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def fields(self) -> dict[str, Any]:
        """GenerateRequest fields: the sampling ones set, the rest passed through."""
        return {**self.sampling_fields(),
                **passthrough_fields("openai", self.model_extra or {})}


class ChatBody(_Body, ChatFields):
    model_config = ConfigDict(extra="allow")  # passed through or refused, never dropped

    def to_input(self) -> ChatInput:
        return self.chat_input(self.max_tokens, self.temperature or 0.0, self.stops(),
                               self.seed, dict(self.model_extra or {}))


TOKEN_IDS = (
    "input as token ids is not supported: send the texts themselves (the ids of one "
    "model's tokenizer mean nothing to another). LangChain's OpenAIEmbeddings sends ids "
    "unless created with check_embedding_ctx_length=False; set it so")


def _token_ids(value: Any) -> bool:
    """A list of ints, or a list of such lists (OpenAI's token-array inputs)."""
    if not isinstance(value, list) or not value:
        return False
    items = value if all(isinstance(v, list) for v in value) else [value]
    return all(v and all(type(t) is int for t in v) for v in items)


class EmbeddingBody(NumbersNotBooleans):
    model_config = ConfigDict(extra="allow")  # passed through or refused, never dropped

    model: str = Field(min_length=1, max_length=256)
    input: EmbedText | Annotated[list[EmbedText], Field(min_length=1, max_length=256)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, json_schema_extra={"enum": [None]})

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("dimensions is not supported: vectors have the model's own size")
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        if _token_ids(value):
            raise ValueError(TOKEN_IDS)
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


# -- streaming ----------------------------------------------------------------------------

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def data(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def finish(answer: Answer) -> str:
    return answer.finish_reason if answer.finish_reason in ("stop", "length") else "stop"


def usage_object(prompt_text: str, answer: Answer) -> dict[str, int]:
    prompt, completion = usage(prompt_text, answer)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


async def sse(
    events: Events, chunk: Callable[[TextEvent | None, Answer | None], dict[str, Any]],
    usage_chunk: Callable[[Answer], dict[str, Any]] | None,
    head: Callable[[str], dict[str, Any]] | None = None,
) -> AsyncIterator[bytes]:
    """`head(model)` first (before the first delta: it names the model that answers),
    `chunk(event, None)` per delta, `chunk(None, answer)` to finish, usage if asked,
    [DONE]; a failure after the status line is a final `data: {"error": ...}` event."""
    try:
        async for event in events:
            if head is not None:
                yield data(head(event.answer.model if event.answer else event.model))
                head = None
            if event.answer is None:
                yield data(chunk(event, None))
                continue
            yield data(chunk(None, event.answer))
            if usage_chunk is not None:
                yield data(usage_chunk(event.answer))
        yield DONE
    except MimiverseError as exc:
        yield data({"error": mimiverse_error(exc)[1]})


def stream_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


# -- /v1/completions ----------------------------------------------------------------------

def _completion_source(body: CompletionBody, gateway: Gateway) -> FimInput | RawInput:
    prompt = body.prompt_text()
    temperature = body.temperature or 0.0
    template = gateway.fim_template
    fields = body.fields()
    if body.suffix is None and is_fim_prompt(prompt, template):
        stops = tuple(dict.fromkeys((*template.stop, *body.stops())))
        return RawInput(prompt, body.max_tokens, temperature, stops, body.seed, fields)
    return FimInput(prefix=prompt, suffix=body.suffix or "", max_tokens=body.max_tokens,
                    temperature=temperature, stop=body.stops(), seed=body.seed, fields=fields)


@router.post("/completions", response_model=None, responses=streamed("text/event-stream"),
             openapi_extra=request_body(CompletionBody, tabby.CompletionBody))
async def completions(request: Request, gateway: GatewayDep) -> Response:
    raw = await json_object(request)
    if "segments" in raw:
        return await tabby.complete(raw, request, gateway)
    body = parse(CompletionBody, raw)
    await catalog(request).resolve(body.model, "completion")
    source = _completion_source(body, gateway)
    prompt_text = body.prompt_text() + (body.suffix or "")
    ident, created = "cmpl-" + uuid.uuid4().hex, unix_now()

    def base(model: str) -> dict[str, Any]:
        return {"id": ident, "object": "text_completion", "created": created, "model": model}

    if not body.stream:
        answer = await cancel_on_disconnect(request, collect(gateway, source))
        choice = {"text": answer.text, "index": 0, "logprobs": None,
                  "finish_reason": finish(answer)}
        return JSONResponse({**base(answer.model), "choices": [choice],
                             "usage": usage_object(prompt_text, answer)})
    events = await cancel_on_disconnect(request, open_events(gateway, source))

    def chunk(event: TextEvent | None, answer: Answer | None) -> dict[str, Any]:
        # Each chunk names the model that answers (an embedded model serves as itself).
        if event is not None:
            return {**base(event.model), "choices": [{
                "text": event.text, "index": 0, "logprobs": None, "finish_reason": None}]}
        assert answer is not None
        return {**base(answer.model), "choices": [{
            "text": "", "index": 0, "logprobs": None, "finish_reason": finish(answer)}]}

    def usage_chunk(answer: Answer) -> dict[str, Any]:
        return {**base(answer.model), "choices": [],
                "usage": usage_object(prompt_text, answer)}

    return stream_response(sse(events, chunk, usage_chunk if body.include_usage() else None))


# -- /v1/chat/completions -----------------------------------------------------------------

@router.post("/chat/completions", response_model=None, responses=streamed("text/event-stream"),
             openapi_extra=request_body(ChatBody))
async def chat_completions(request: Request, gateway: GatewayDep) -> Response:
    body = parse(ChatBody, await json_object(request))
    await catalog(request).resolve(body.model, "chat")
    chat, sources = await codebase_switch(request, body.to_input())  # `@codebase ...`
    prompt_text = "".join(m.content for m in chat.messages)
    ident, created = "chatcmpl-" + uuid.uuid4().hex, unix_now()

    def base(model: str, kind: str) -> dict[str, Any]:
        return {"id": ident, "object": kind, "created": created, "model": model}

    if not body.stream:
        answer = await cancel_on_disconnect(request, gateway.chat(chat))
        only = {"index": 0, "message": message_object(answer), "logprobs": None,
                "finish_reason": chat_finish(answer)}
        return mark_sources(JSONResponse({**base(answer.model, "chat.completion"),
                                          "choices": [only],
                                          "usage": usage_object(prompt_text, answer)}), sources)
    events = await cancel_on_disconnect(request, gateway.stream_chat(chat))

    def choice(model: str, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return {**base(model, "chat.completion.chunk"), "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}

    def chunk(event: TextEvent | None, answer: Answer | None) -> dict[str, Any]:
        if event is not None:
            return choice(event.model, delta_object(event), None)
        assert answer is not None
        return choice(answer.model, {}, chat_finish(answer))

    def usage_chunk(answer: Answer) -> dict[str, Any]:
        return {**base(answer.model, "chat.completion.chunk"), "choices": [],
                "usage": usage_object(prompt_text, answer)}

    def head(model: str) -> dict[str, Any]:
        return choice(model, {"role": "assistant", "content": ""}, None)

    return mark_sources(stream_response(
        sse(events, chunk, usage_chunk if body.include_usage() else None, head)), sources)


# -- /v1/embeddings -----------------------------------------------------------------------

def _base64(vector: list[float]) -> str:
    # As OpenAI does: the little-endian float32 bytes of the vector, base64-encoded.
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


@router.post("/embeddings", openapi_extra=request_body(EmbeddingBody))
async def embeddings(request: Request, gateway: GatewayDep) -> JSONResponse:
    body = parse(EmbeddingBody, await json_object(request))
    await catalog(request).resolve(body.model, "embedding")
    texts = body.texts()
    extras = EmbedExtras.of("openai", body.model_extra or {})
    result = await cancel_on_disconnect(request, gateway.embed(texts, extras))
    encode: Callable[[list[float]], Any] = _base64 if body.encoding_format == "base64" \
        else (lambda v: v)
    items = [{"object": "embedding", "index": i, "embedding": encode(v)}
             for i, v in enumerate(result.vectors)]
    tokens = sum(estimate_tokens(t) for t in texts)
    return JSONResponse({"object": "list", "data": items, "model": result.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# -- /v1/models ---------------------------------------------------------------------------

def model_object(name: str, capabilities: list[str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": name, "object": "model", "created": 0, "owned_by": OWNER}
    if capabilities is not None:
        obj["capabilities"] = capabilities  # not OpenAI's: what clients may turn on
    return obj


async def _capabilities(gateway: Gateway, model: KnownModel) -> list[str] | None:
    return None if model.task is None else await reported(gateway.capabilities, model.task)


@router.get("/models")
async def list_models(request: Request, gateway: GatewayDep) -> JSONResponse:
    models = await catalog(request).all()
    return JSONResponse({"object": "list", "data": [
        model_object(m.name, await _capabilities(gateway, m)) for m in models]})


@router.get("/models/{name:path}")
async def retrieve_model(name: str, request: Request, gateway: GatewayDep) -> JSONResponse:
    found = [m for m in await catalog(request).all() if m.name == name]
    if not found:
        raise ModelNotFound(f"model '{name}' not found")
    return JSONResponse(model_object(name, await _capabilities(gateway, found[0])))
