"""/api/generate bodies: what each field becomes for code completion (FIM or a raw prompt)
and for a model that names the chat task.

Every field is honoured, translated or refused (400 naming it), as on /api/chat:
- options: num_predict, temperature, stop, seed as ever; top_p, top_k, min_p, the
  penalties and num_ctx go to the backend (each kind spells them its way; a kind without
  one is refused, naming it and the backend); num_ctx also bounds the FIM prompt, as the
  window it names must hold prompt and answer; other options pass through to Ollama.
- keep_alive goes to Ollama; other kinds keep their model loaded anyway, so only an
  unload (0) is refused there.
- suffix, raw: FIM or the prompt as is (see api/compat/ollama.py).
- system, format, images, think: a chat model's (system message, structured output,
  images on the prompt's message, thinking); code completion has no use for them and
  refuses them (think=false asks for nothing and is taken).
- template, context: refused when set: prompts go through our own template, and answers
  carry no context to send back.
- fields Ollama defines that we do not model pass through to an Ollama backend.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from mimiverse.api.chat_fields import check_image_count, checked_image
from mimiverse.api.compat.ollama_chat import ChatOptions, add_format_and_think
from mimiverse.api.compat.shared import is_fim_prompt
from mimiverse.api.limits import MAX_TEXT, KeepAlive, NumbersNotBooleans
from mimiverse.backends.base import ChatMessage
from mimiverse.config import Task
from mimiverse.errors import InvalidRequest
from mimiverse.fim.templates import FimTemplate
from mimiverse.gateway import ChatInput, FimInput, RawInput

_CHAT_ONLY = ("system", "format", "images", "think")


def model_required(schema: dict[str, Any]) -> None:
    # `model` parses as optional so that its absence gets Ollama's own message; the
    # document says what is accepted.
    schema["properties"]["model"] = {"type": "string", "minLength": 1, "maxLength": 256}
    schema["required"] = sorted({*schema.get("required", ()), "model"})


class GenerateBody(NumbersNotBooleans):
    model_config = ConfigDict(extra="allow", json_schema_extra=model_required)

    model: str | None = Field(None, max_length=256)
    stream: bool = True  # Ollama streams unless told not to
    prompt: str = Field("", max_length=MAX_TEXT)
    suffix: str | None = Field(None, max_length=MAX_TEXT)
    system: str | None = Field(None, max_length=MAX_TEXT)
    raw: bool = False
    options: ChatOptions = Field(default_factory=ChatOptions)
    format: Literal["", "json"] | dict[str, Any] | None = None
    images: Annotated[list[Annotated[str, Field(max_length=30_000_000)]], Field(
        max_length=16)] | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    keep_alive: KeepAlive | None = None
    # Taken only empty (refuse_unused says why otherwise); the document says so.
    template: str | None = Field(None, max_length=MAX_TEXT,
                                 json_schema_extra={"maxLength": 0})
    context: list[Any] | None = Field(None, max_length=1 << 20,
                                      json_schema_extra={"maxItems": 0})

    def fields(self) -> dict[str, Any]:
        """GenerateRequest / ChatRequest fields: sampling, keep_alive, passthrough."""
        o = self.options
        fields = o.sampling_fields()
        if self.keep_alive is not None:
            fields["keep_alive"] = self.keep_alive
        return {**fields, **o.passthrough(self.model_extra or {})}

    def refuse_unused(self, chatting: bool) -> None:
        """InvalidRequest naming the first field set that this request cannot use."""
        if self.template:
            raise InvalidRequest("template is not supported: prompts are rendered with the "
                                 "model's FIM template here (send raw: true for your own)")
        if self.context:
            raise InvalidRequest("context is not supported: answers carry no context; "
                                 "send the conversation as /api/chat messages")
        if chatting:
            return
        for name in _CHAT_ONLY:
            value = getattr(self, name)
            if value not in (None, "", [], False):
                raise InvalidRequest(f"{name} is not supported for code completion: the "
                                     "model completes code (it is a chat model's field)")


def generate_source(body: GenerateBody, task: Task, template: FimTemplate
                    ) -> FimInput | RawInput | ChatInput:
    body.refuse_unused(task == "chat")
    o = body.options
    temperature = o.temperature or 0.0
    fields = body.fields()
    if task == "chat":
        return _chat_source(body, fields)
    if body.suffix is None and body.raw:
        return RawInput(body.prompt, o.max_tokens(), temperature, o.stops(), o.fixed_seed(),
                        fields)
    if body.suffix is None and is_fim_prompt(body.prompt, template):
        stops = tuple(dict.fromkeys((*template.stop, *o.stops())))
        return RawInput(body.prompt, o.max_tokens(), temperature, stops, o.fixed_seed(),
                        fields)
    return FimInput(prefix=body.prompt, suffix=body.suffix or "", max_tokens=o.max_tokens(),
                    temperature=temperature, stop=o.stops(), seed=o.fixed_seed(),
                    fields=fields)


def _chat_source(body: GenerateBody, fields: dict[str, Any]) -> ChatInput:
    o = body.options
    images = tuple(checked_image(i) for i in body.images or ())
    check_image_count(len(images))
    system = (ChatMessage("system", body.system),) if body.system else ()
    add_format_and_think(fields, body.format, body.think)
    return ChatInput((*system, ChatMessage("user", body.prompt, images)), o.max_tokens(),
                     o.temperature or 0.0, o.stops(), o.fixed_seed(), fields)
