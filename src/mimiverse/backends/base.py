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

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mimiverse.config import BackendSettings, Task
from mimiverse.errors import Unsupported


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    model: str
    prompt: str
    max_tokens: int = 128
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_p: float | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 512
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_p: float | None = None


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


@dataclass(slots=True)
class Delta:
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" on the final delta
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

    def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        raise Unsupported(f"{self.kind} backends do not generate", backend=self.name)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        raise Unsupported(f"{self.kind} backends do not chat", backend=self.name)

    async def embed_batch(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        raise Unsupported(f"{self.kind} backends do not embed", backend=self.name)

    async def list_models(self) -> list[str]:
        """Model names this backend can serve now (may be empty if it cannot tell)."""
        return []

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
