"""The Ollama API: /api/generate, /api/chat, /api/embed, /api/embeddings, /api/tags,
/api/show, /api/version — NDJSON streams (the default, as in Ollama) and Ollama's bodies.

Decisions where Ollama leaves room:
- /api/generate with a model that names the chat task chats (the prompt as the user
  message, `system` before it), as Ollama applies a chat model's template; otherwise it
  completes: `suffix` -> FIM through our template (also with `raw: true`: a suffix only
  makes sense as FIM); `raw: true` -> the prompt unchanged, no post-processing; a prompt
  that already holds our family's FIM tokens (Twinny, llm-ls) -> as is, with the family's
  stop tokens; else FIM with an empty suffix. An empty prompt only loads (done_reason
  "load"), as in Ollama. Both /api/generate and /api/chat honour, pass through or refuse
  every field (api/compat/ollama_generate.py, api/compat/ollama_chat.py); so do
  /api/embed and /api/embeddings (_EmbedFields) and /api/show (ShowBody).
- Durations are nanoseconds measured here: prompt_eval_duration is the wait for the first
  token, eval_duration the rest; load_duration is 0 (backends keep models loaded).
  Non-streamed answers report their whole time as eval_duration.
- /api/show reports each model's capabilities (routing/capabilities.py: configured, else
  its backend's), and for the completion model "insert" and
  a template with {{ .Suffix }} spelled in the family's FIM tokens (what Continue checks to
  enable FIM), and `stop`/`num_ctx` parameters from our settings.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from starlette.responses import Response

from mimiverse.api.assist import codebase_switch, mark_sources
from mimiverse.api.compat.ollama_chat import ChatFields, tool_calls
from mimiverse.api.compat.ollama_chat import message_object as chat_message
from mimiverse.api.compat.ollama_generate import GenerateBody, generate_source, model_required
from mimiverse.api.compat.shared import (
    ModelCatalog,
    OllamaError,
    ParseError,
    Source,
    catalog,
    collect,
    describe,
    json_object,
    open_events,
    parse,
    protocol_responses,
    request_body,
    route_class,
    streamed,
    usage,
)
from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.errors import status_for
from mimiverse.api.limits import EmbedText, KeepAlive, NumbersNotBooleans
from mimiverse.backends.base import EmbedExtras
from mimiverse.config import Task
from mimiverse.errors import (
    BackendProtocolError,
    ImageTooLarge,
    InvalidRequest,
    MimiverseError,
    ModelNotFound,
    RequestError,
)
from mimiverse.fim.prompt import estimate_tokens
from mimiverse.fim.templates import FimTemplate
from mimiverse.gateway import Answer, ChatInput, Events, Gateway, TextEvent
from mimiverse.routing.capabilities import reported

VERSION = "0.12.6"  # the Ollama API level these routes follow
NDJSON = "application/x-ndjson"


# -- errors: the one mapping for this protocol --------------------------------------------

def map_error(exc: Exception) -> Response:
    if isinstance(exc, ValidationError):
        return JSONResponse({"error": describe(exc)[0]}, status_code=400)
    if isinstance(exc, ParseError):
        return JSONResponse({"error": str(exc)}, status_code=400)
    assert isinstance(exc, MimiverseError)
    if isinstance(exc, RequestError) and not isinstance(exc, ModelNotFound | ImageTooLarge):
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"error": str(exc)}, status_code=status_for(exc))


router = APIRouter(prefix="/api", tags=["ollama"], route_class=route_class(map_error),
                   responses=protocol_responses(OllamaError))


# -- request bodies -----------------------------------------------------------------------

class ChatBody(ChatFields):
    model_config = ConfigDict(extra="allow", json_schema_extra=model_required)

    model: str | None = Field(None, max_length=256)
    stream: bool = True  # Ollama streams unless told not to


class _EmbedFields(NumbersNotBooleans):
    """What /api/embed and /api/embeddings share. Options, keep_alive and the fields not
    modelled here (`truncate`, ...) go verbatim to an Ollama backend and are refused by
    other kinds (400 naming them); a keep_alive that keeps the model loaded asks nothing
    of them. A null option is unset, as Ollama reads it (LangChain sends every option,
    most of them null)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=model_required)

    model: str | None = Field(None, max_length=256)
    options: dict[str, Any] | None = Field(None, max_length=256)
    keep_alive: KeepAlive | None = None
    dimensions: int | None = Field(None, json_schema_extra={"enum": [None]})

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("dimensions is not supported: vectors have the model's own size")
        return value

    def extras(self) -> EmbedExtras:
        fields = dict(self.model_extra or {})
        fields.update({f"options.{k}": v for k, v in (self.options or {}).items()
                       if v is not None})
        if self.keep_alive is not None:
            fields["keep_alive"] = self.keep_alive
        return EmbedExtras.of("ollama", fields)


class EmbedBody(_EmbedFields):
    input: EmbedText | Annotated[list[EmbedText], Field(min_length=1, max_length=256)]


class EmbeddingsBody(_EmbedFields):
    prompt: EmbedText
    # /api/embed's field, which `prompt` becomes upstream: refused (passed through, it
    # would replace the prompt).
    input: None = None


def _model_or_name(schema: dict[str, Any]) -> None:
    named = {"type": "string", "minLength": 1, "maxLength": 256}
    schema["properties"].update(model=named, name=named)
    schema["anyOf"] = [{"required": ["model"]}, {"required": ["name"]}]


class ShowBody(BaseModel):
    """Ollama's system, template and options (shown in place of the model's own) are not
    taken here, and other unknown fields neither: each is refused, naming it. `verbose`
    asks for the tokenizer and tensor detail Ollama reads from a GGUF; every answer here
    already holds all there is, so it asks for nothing more."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_model_or_name)

    model: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)  # the older spelling (Continue sends it)
    verbose: bool | None = None


# -- answers ------------------------------------------------------------------------------

def created_at() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def final_fields(answer: Answer, prompt_text: str, wait_s: float, eval_s: float
                 ) -> dict[str, Any]:
    prompt_tokens, completion_tokens = usage(prompt_text, answer)
    wait_ns, eval_ns = _ns(wait_s), _ns(eval_s)
    return {
        "done": True,
        "done_reason": answer.finish_reason if answer.finish_reason == "length" else "stop",
        "total_duration": wait_ns + eval_ns,
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": wait_ns,
        "eval_count": completion_tokens,
        "eval_duration": eval_ns,
    }


def line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


async def ndjson(
    events: Events, started: float, prompt_text: str,
    content: Callable[[TextEvent], dict[str, Any]],
    calls: Callable[[Answer], dict[str, Any] | None] | None = None,
) -> AsyncIterator[bytes]:
    """One line per delta, then (with `calls`) a line with the answer's whole tool calls,
    then the `done` line; a failure after the status line is a final `{"error": ...}`
    line, as Ollama sends it."""
    first: float | None = None
    try:
        async for event in events:
            now = time.perf_counter()
            if first is None:
                first = now
            answer = event.answer
            if answer is None:
                yield line({"model": event.model, "created_at": created_at(),
                            **content(event), "done": False})
                continue
            called = calls(answer) if calls is not None else None
            if called is not None:
                yield line({"model": answer.model, "created_at": created_at(), **called,
                            "done": False})
            yield line({"model": answer.model, "created_at": created_at(),
                        **content(_EMPTY),
                        **final_fields(answer, prompt_text, first - started, now - first)})
    except MimiverseError as exc:
        yield line({"error": str(exc)})
    except ValueError as exc:  # tool-call arguments that are no JSON object
        yield line({"error": f"the model's answer cannot be sent: {exc}"})


_EMPTY = TextEvent("delta")


def ndjson_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type=NDJSON)


async def _respond(
    request: Request, gateway: Gateway, source: Source,
    prompt_text: str, key: str, stream: bool,
) -> Response:
    """`key` names what holds the text: "response" (generate) or "message" (chat)."""
    started = time.perf_counter()
    chatting = key == "message"
    if stream:
        # Every line names the model that answers (an embedded model serves as itself).
        events = await cancel_on_disconnect(request, open_events(gateway, source))
        if isinstance(source, ChatInput):
            return ndjson_response(ndjson(events, started, prompt_text,
                                          _chat_delta if chatting else _chat_response,
                                          _chat_calls if chatting else None))
        return ndjson_response(ndjson(events, started, prompt_text,
                                      lambda e: {"response": e.text}))
    answer = await cancel_on_disconnect(request, collect(gateway, source))
    try:
        content = {"message": chat_message(answer)} if chatting else {"response": answer.text}
    except ValueError as exc:
        raise BackendProtocolError(f"the model's answer cannot be sent: {exc}",
                                   backend=answer.backend) from None
    return JSONResponse({"model": answer.model, "created_at": created_at(), **content,
                         **final_fields(answer, prompt_text, 0.0, answer.latency_ms / 1000)})


def _chat_delta(event: TextEvent) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": event.text}
    if event.reasoning:
        message["thinking"] = event.reasoning
    return {"message": message}


def _chat_response(event: TextEvent) -> dict[str, Any]:
    return {"response": event.text}  # /api/generate answered by the chat model


def _chat_calls(answer: Answer) -> dict[str, Any] | None:
    if not answer.tool_calls:
        return None
    return {"message": {"role": "assistant", "content": "", "tool_calls": tool_calls(answer)}}


def _loaded(model: str, content: dict[str, Any]) -> JSONResponse:
    # Ollama answers a request with nothing to generate by loading the model.
    return JSONResponse({"model": model, "created_at": created_at(), **content,
                         "done": True, "done_reason": "load"})


async def _task(cat: ModelCatalog, name: str | None, default: Task,
                verb: str | None = None) -> Task:
    """The task a model name stands for; with `verb`, an embedding model is refused."""
    if not name:
        raise InvalidRequest("model is required")
    task = await cat.task_of(name, default)
    if verb is not None and task == "embedding":
        raise InvalidRequest(f"\"{name}\" does not support {verb}")
    return task


# -- /api/generate, /api/chat -------------------------------------------------------------

@router.post("/generate", response_model=None, responses=streamed(NDJSON),
             openapi_extra=request_body(GenerateBody))
async def generate(request: Request, gateway: GatewayDep) -> Response:
    body = parse(GenerateBody, await json_object(request))
    task = await _task(catalog(request), body.model, "completion", "generate")
    if body.prompt == "" and body.suffix is None:
        return _loaded(gateway.settings.models.route(task).model, {"response": ""})
    source = generate_source(body, task, gateway.fim_template)
    prompt_text = (body.system or "") + body.prompt + (body.suffix or "")
    return await _respond(request, gateway, source, prompt_text, "response", body.stream)


@router.post("/chat", response_model=None, responses=streamed(NDJSON),
             openapi_extra=request_body(ChatBody))
async def chat(request: Request, gateway: GatewayDep) -> Response:
    body = parse(ChatBody, await json_object(request))
    await _task(catalog(request), body.model, "chat", "chat")  # known, and not an embedder
    if not body.messages:
        return _loaded(gateway.settings.models.chat.model,
                       {"message": {"role": "assistant", "content": ""}})
    chat_input = body.chat_input(dict(body.model_extra or {}))
    chat_input, sources = await codebase_switch(request, chat_input)  # `@codebase ...`
    prompt_text = "".join(m.content for m in chat_input.messages)
    return mark_sources(
        await _respond(request, gateway, chat_input, prompt_text, "message", body.stream),
        sources)


# -- /api/embed, /api/embeddings ----------------------------------------------------------

@router.post("/embed", openapi_extra=request_body(EmbedBody))
async def embed(request: Request, gateway: GatewayDep) -> JSONResponse:
    body = parse(EmbedBody, await json_object(request))
    await _embedding_model(catalog(request), body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await cancel_on_disconnect(request, gateway.embed(texts, body.extras()))
    return JSONResponse({
        "model": result.model, "embeddings": result.vectors,
        "total_duration": _ns(result.latency_ms / 1000), "load_duration": 0,
        "prompt_eval_count": sum(estimate_tokens(t) for t in texts),
    })


@router.post("/embeddings", openapi_extra=request_body(EmbeddingsBody))
async def embeddings(request: Request, gateway: GatewayDep) -> JSONResponse:
    body = parse(EmbeddingsBody, await json_object(request))
    await _embedding_model(catalog(request), body.model)
    result = await cancel_on_disconnect(request, gateway.embed([body.prompt], body.extras()))
    return JSONResponse({"embedding": result.vectors[0]})


async def _embedding_model(cat: ModelCatalog, name: str | None) -> None:
    if not name:
        raise InvalidRequest("model is required")
    await cat.resolve(name, "embedding")


# -- /api/tags, /api/show, /api/version ---------------------------------------------------

def _details(family: str | None) -> dict[str, Any]:
    families = [family] if family else None
    return {"parent_model": "", "format": "gguf", "family": family or "",
            "families": families, "parameter_size": "", "quantization_level": ""}


@router.get("/tags")
async def tags(request: Request, gateway: GatewayDep) -> JSONResponse:
    stamp = created_at()
    models = [{
        "name": m.name, "model": m.name, "modified_at": stamp, "size": 0,
        "digest": hashlib.sha256(m.name.encode()).hexdigest(),
        "details": _details(gateway.fim_template.family if m.task == "completion" else None),
    } for m in await catalog(request).all()]
    return JSONResponse({"models": models})


def fim_template_text(template: FimTemplate) -> str:
    """An Ollama (Go) template that spells our FIM form, so clients see {{ .Suffix }}."""
    prompt, suffix = "{{ .Prompt }}", "{{ .Suffix }}"
    if template.suffix_first:
        fim = f"{template.suf}{suffix}{template.pre}{prompt}{template.mid}"
    else:
        fim = f"{template.pre}{prompt}{template.suf}{suffix}{template.mid}"
    return "{{- if .Suffix }}" + fim + "{{- else }}" + prompt + "{{- end }}"


@router.post("/show", openapi_extra=request_body(ShowBody))
async def show(request: Request, gateway: GatewayDep) -> JSONResponse:
    body = parse(ShowBody, await json_object(request))
    name = body.model or body.name
    task = await _task(catalog(request), name, "completion")
    route = gateway.settings.models.route(task)
    template = gateway.fim_template
    family = template.family if task == "completion" else route.family
    # Each line `key value`: Continue parses them with exactly that pattern.
    parameters = [f"num_ctx {route.max_prompt_tokens + route.max_tokens}"]
    if task == "completion":
        text = fim_template_text(template)
        parameters += [f"stop {orjson.dumps(s).decode()}" for s in template.stop]
    elif task == "chat":
        text = "{{ .Prompt }}"
    else:
        text = ""
    return JSONResponse({
        "modelfile": f"# served by Mimiverse as the {task} model\nFROM {route.model}\n",
        "parameters": "\n".join(parameters),
        "template": text,
        "details": _details(family),
        "model_info": {"general.architecture": family or "", "general.basename": route.model},
        "capabilities": await reported(gateway.capabilities, task),
        "modified_at": created_at(),
    })


@router.get("/version")
async def version() -> JSONResponse:
    return JSONResponse({"version": VERSION})
