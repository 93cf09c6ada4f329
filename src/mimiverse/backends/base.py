"""The small base class every inference backend implements.

A backend answers the tasks listed in `tasks`:
- completion: `stream_generate(GenerateRequest)`, a raw, already rendered prompt;
- chat: `stream_chat(ChatRequest)`;
- embedding: `embed_batch(model, texts)`.

Streams yield `Delta`s; the last one carries `finish_reason` (and token counts when the
backend reports them). Backends translate their foreign errors into `BackendError`
subclasses; the router enforces first-token / between-token / total timeouts uniformly.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mimiverse.config import BackendSettings, Task
from mimiverse.errors import Unsupported


@dataclass(frozen=True, slots=True)
class Image:
    """An image in a chat message: base64 bytes (`data`) or a URL the backend fetches."""

    data: str = ""  # base64, without a `data:` prefix
    media_type: str = ""  # e.g. "image/png", when the client said
    url: str = ""  # an http(s) URL, for backends that fetch images themselves

    def data_url(self) -> str:
        return self.url or f"data:{self.media_type or 'image/png'};base64,{self.data}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; `arguments` is the JSON text of an object;
    `index`: Ollama's `function.index` as its client sent it (the call's position among
    its answer's calls, which the order of the calls carries for every other kind)."""

    id: str
    name: str
    arguments: str
    index: int | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # system | user | assistant | tool
    content: str
    images: tuple[Image, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns that called tools
    tool_call_id: str | None = None  # tool results: the call answered (OpenAI)
    tool_name: str | None = None  # tool results: the function's name (Ollama)
    reasoning: str = ""  # an assistant turn's thinking, when the client sends it back
    name: str | None = None  # a participant's name (OpenAI's `name` outside tool results)


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """A function the model may call; `parameters` is its JSON Schema. Compared (and
    hashed) by identity: the API layer reuses one Tool per tool list an agent resends, so
    backends can keep each one's wire form."""

    name: str
    description: str = ""
    parameters: Any = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Structured output: any JSON object, or one matching `schema`."""

    type: str  # "json_object" | "json_schema"
    schema: Any = None
    name: str = ""
    strict: bool | None = None


# Client fields of one protocol that we do not model, sent verbatim to a backend of that
# protocol and refused by any other: (("user", "u-1"),), (("options.num_gpu", 1),).
Passthrough = tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class EmbedExtras:
    """An embedding request's fields beyond model and input, as the client's protocol
    (`kind`) spells them: sent verbatim to backends of that kind, refused by others."""

    kind: str | None = None
    fields: Passthrough = ()

    @classmethod
    def of(cls, kind: str, fields: dict[str, Any]) -> EmbedExtras:
        return cls(kind, tuple(sorted(fields.items()))) if fields else cls()

    def used_fields(self) -> list[str]:
        """`<kind>:<field>` per field a backend of another kind cannot honour: all but a
        keep_alive that keeps the model loaded (every backend does that anyway)."""
        return [f"{self.kind}:{key}" for key, value in self.fields
                if key != "keep_alive" or unloads(value)]

    def answer_fields(self) -> Passthrough:
        """The fields that may change a vector (the cache key's): keep_alive does not."""
        return tuple((key, value) for key, value in self.fields if key != "keep_alive")


NO_EXTRAS = EmbedExtras()


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    model: str
    prompt: str
    max_tokens: int = 128
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_p: float | None = None
    # The optional fields below, by GENERATE_FIELDS name, are checked against each
    # backend's `chat_fields` (the same sampling knobs) before it is called.
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    num_ctx: int | None = None  # forwarded to Ollama; the gateway bounds the prompt by it
    keep_alive: str | float | None = None  # Ollama's; only 0 (unload) needs honouring
    passthrough: Passthrough = ()  # as ChatRequest's
    passthrough_kind: str | None = None

    def used_fields(self) -> list[str]:
        """The optional fields set here that a backend must be able to honour (names as
        Backend.chat_fields spells them, `<kind>:<field>` per passthrough field)."""
        used = [name for name in GENERATE_FIELDS if getattr(self, name) is not None]
        # Every backend keeps its model loaded: only an unload asks for something.
        if self.keep_alive is not None and unloads(self.keep_alive):
            used.append("keep_alive")
        used += [f"{self.passthrough_kind}:{key}" for key, _ in self.passthrough]
        return used


# Sampling fields a generation may set beyond stop/seed/top_p (num_ctx and keep_alive are
# judged apart: see GenerateRequest.used_fields).
GENERATE_FIELDS = ("top_k", "min_p", "presence_penalty", "frequency_penalty",
                   "repeat_penalty")
_ZERO = re.compile(r"^[0.]+(ns|us|µs|ms|s|m|h)?$")


def unloads(keep_alive: str | float) -> bool:
    """Does an Ollama keep_alive ask to unload the model right after ("0", 0, "0s")?"""
    return keep_alive == 0 if not isinstance(keep_alive, str) \
        else _ZERO.match(keep_alive.strip()) is not None


# The optional chat fields a backend may or may not honour (Backend.chat_fields), by the
# name errors use; `images` stands for any message with an image.
CHAT_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "think",
               "top_k", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty",
               "num_ctx", "keep_alive")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 512
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    num_ctx: int | None = None
    keep_alive: str | float | None = None  # Ollama's duration ("5m", seconds, 0: unload)
    tools: tuple[Tool, ...] = ()
    tool_choice: str | None = None  # "auto" | "none" | "required" | "function"
    tool_choice_name: str | None = None  # the function forced by tool_choice="function"
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    think: bool | str | None = None  # on/off, or an effort: "low" | "medium" | "high"
    # Fields only one protocol defines and we do not model, sent verbatim to backends of
    # that protocol (`passthrough_kind`) and refused by others.
    passthrough: Passthrough = ()
    passthrough_kind: str | None = None

    def used_fields(self) -> list[str]:
        """The optional fields set here (CHAT_FIELDS names, `images`, `image URLs`, and
        `<kind>:<field>` per passthrough field): what a backend must be able to honour."""
        used = [name for name in CHAT_FIELDS if getattr(self, name) not in (None, ())]
        # What every backend does anyway is no demand: "auto", and parallel calls allowed
        # ("none" is honoured everywhere by sending no tools).
        if self.tool_choice in ("auto", "none"):
            used.remove("tool_choice")
        if self.parallel_tool_calls:
            used.remove("parallel_tool_calls")
        if any(t.strict for t in self.tools):
            used.append("strict tools")
        if any(m.name for m in self.messages):
            used.append("message names")
        images = [i for m in self.messages for i in m.images]
        if images:
            used.append("images")
            if any(i.url for i in images):
                used.append("image URLs")
        used += [f"{self.passthrough_kind}:{key}" for key, _ in self.passthrough]
        return used


def sampling_overrides(request: GenerateRequest | ChatRequest) -> dict[str, Any]:
    """The optional sampling fields the client set (stop, seed, top_p), by their common
    wire names; fields left unset stay out so the server's own defaults apply."""
    fields: dict[str, Any] = {}
    if request.stop:
        fields["stop"] = list(request.stop)
    if request.seed is not None:
        fields["seed"] = request.seed
    if request.top_p is not None:
        fields["top_p"] = request.top_p
    return fields


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    """A piece of a streamed tool call: the first piece of each `index` carries its id and
    name, the rest only argument text (OpenAI streams them so; whole calls are one piece)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Delta:
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "tool_calls" on the final delta
    reasoning: str = ""  # thinking text (Ollama `thinking`, OpenAI-style reasoning_content)
    tool_calls: tuple[ToolCallChunk, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_ids: tuple[int, ...] = field(default=())  # when the backend exposes them


class PromptSpeed:
    """How fast a backend reads prompts, learned, and the FIM prompt that fits a target time.

    The budget moves in steps of 128 tokens and only when it is off by more than a quarter:
    a budget that followed every measurement would move the prompt's start with every
    request and defeat the engine's prompt cache.
    """

    STEP = 128
    FLOOR = 256

    def __init__(self, target_s: float) -> None:
        self.target_s = target_s
        self.tokens_per_s: float | None = None
        self._budget: int | None = None

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens < 32 or seconds <= 0:
            return  # a prompt mostly served from cache says nothing about speed
        rate = tokens / seconds
        self.tokens_per_s = rate if self.tokens_per_s is None else (
            0.7 * self.tokens_per_s + 0.3 * rate)
        fresh = max(self.FLOOR, int(self.tokens_per_s * self.target_s) // self.STEP * self.STEP)
        if self._budget is None or abs(fresh - self._budget) > self._budget / 4:
            self._budget = fresh

    @property
    def budget(self) -> int | None:
        return self._budget


class Backend:
    """Base of all backends. Subclasses set `kind` and `tasks` and override what they do."""

    kind: ClassVar[str] = ""
    tasks: ClassVar[frozenset[Task]] = frozenset()
    # The optional chat fields (CHAT_FIELDS, "images", "image URLs") this kind honours;
    # passthrough fields of the backend's own protocol (`kind`) always are.
    chat_fields: ClassVar[frozenset[str]] = frozenset()

    # Learned prompt budgets default to off; backends that report prompt timing and are
    # often slow (in-process llama.cpp) turn them on with a target.
    default_target_prompt_s: ClassVar[float | None] = None

    def __init__(self, config: BackendSettings) -> None:
        self.config = config
        self.name = config.name
        target = config.target_prompt_s or self.default_target_prompt_s
        self.prompt_speed = PromptSpeed(target) if target is not None else None

    def supports(self, task: Task) -> bool:
        return task in self.tasks

    def chat_gaps(self, used: list[str]) -> list[str]:
        """Of the request's `used` fields (ChatRequest.used_fields), those this backend
        cannot honour."""
        own = self.kind + ":"
        return [f for f in used if f not in self.chat_fields and not f.startswith(own)]

    def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        raise Unsupported(f"{self.kind} backends do not generate", backend=self.name)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        raise Unsupported(f"{self.kind} backends do not chat", backend=self.name)

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        """Vectors of `texts`; `passthrough`: client fields of this backend's own protocol,
        verbatim (the router gives them only to a backend of the client's kind)."""
        raise Unsupported(f"{self.kind} backends do not embed", backend=self.name)

    async def list_models(self) -> list[str]:
        """Model names this backend can serve now (may be empty if it cannot tell)."""
        return []

    def served_model(self, requested: str) -> str:
        """The model that answers a request for `requested` here (what answers report):
        a server runs the model it is asked for; an in-process backend its own."""
        return requested

    async def model_capabilities(self, model: str) -> tuple[str, ...] | None:
        """What `model` can do here, in Ollama's names ("tools", "vision", "thinking",
        ...), when this backend can tell; None when it cannot."""
        return None

    def prompt_budget(self) -> int | None:
        """The FIM prompt size this backend should get: its configured cap and/or what
        it reads within its target time; None when neither is known."""
        budgets = [b for b in (self.config.max_prompt_tokens,
                               self.prompt_speed.budget if self.prompt_speed else None)
                   if b is not None]
        return min(budgets) if budgets else None

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` by the model's own tokenizer, when this backend has it at hand
        without a round trip (an in-process model already loaded); else None."""
        return None

    async def check_health(self) -> None:
        """Return if the backend is reachable; raise a BackendError saying why not."""
        await self.list_models()

    async def warm_up(self) -> None:
        """Get ready to answer fast, in the background at start (an in-process backend
        loads its model); by default there is nothing to do."""

    async def aclose(self) -> None:
        """Release connections, threads or loaded models."""
