"""What a chat becomes before any backend is called: its route (the chat model, or the
vision model for images the chat model cannot see), the internal request, the optional
fields it uses, and the checks that refuse what no candidate could honour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mimiverse.backends.base import ChatMessage, ChatRequest
from mimiverse.config import ModelRoute
from mimiverse.errors import FieldUnsupported
from mimiverse.routing.capabilities import Capabilities, missing
from mimiverse.routing.router import Router


@dataclass(frozen=True, slots=True)
class ChatInput:
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Further ChatRequest fields by name (tools, response_format, think, top_p, ...).
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatPlan:
    request: ChatRequest
    used: list[str]  # ChatRequest.used_fields(): what a backend must honour
    route: ModelRoute
    route_name: str  # "chat" | "vision"


# (route name, prompt text) -> raises PromptTooLong when the route cannot take it
LengthCheck = Callable[[str, str], None]


async def plan_chat(router: Router, capabilities: Capabilities, chat: ChatInput,
                    check_length: LengthCheck) -> ChatPlan:
    name, route = await _route_for(router, capabilities, chat)
    check_length(name, "".join(m.content for m in chat.messages))
    request = ChatRequest(
        model=route.model, messages=chat.messages,
        max_tokens=min(chat.max_tokens or route.max_tokens, route.max_tokens),
        temperature=chat.temperature, stop=chat.stop, seed=chat.seed, **chat.fields,
    )
    used = request.used_fields()
    if used:
        check_backends(router, name, route, used)
        await _check_capabilities(capabilities, name, request, used)
    return ChatPlan(request, used, route, name)


async def _route_for(router: Router, capabilities: Capabilities,
                     chat: ChatInput) -> tuple[str, ModelRoute]:
    """The vision route for images, unless the chat model is known to see."""
    vision = router.settings.models.vision
    if vision is not None and any(m.images for m in chat.messages):
        caps = await capabilities.of("chat")
        if caps is None or "vision" not in caps:
            return "vision", vision
    return "chat", router.route("chat")


def check_backends(router: Router, name: str, route: ModelRoute, used: list[str]) -> None:
    """FieldUnsupported when no backend of the route can honour every used field."""
    gaps = [(b, b.chat_gaps(used)) for b in (router.backends[n] for n in route.backends)]
    if all(missing_fields for _, missing_fields in gaps):
        raise FieldUnsupported("; ".join(
            f"{', '.join(m)}: not supported by backend {b.name!r} ({b.kind})"
            for b, m in gaps) + f" (the {name} route's backends)")


async def _check_capabilities(capabilities: Capabilities, name: str, request: ChatRequest,
                              used: list[str]) -> None:
    """FieldUnsupported when the model is known not to do what `request` needs (tools,
    images, thinking); thinking switched off needs nothing."""
    needs = [f for f in used if not (f == "think" and request.think is False)]
    caps = await capabilities.of(name)
    lacking = missing(caps, needs)
    if lacking:
        raise FieldUnsupported(
            f"the {name} model {request.model!r} cannot use {', '.join(lacking)}: its "
            f"capabilities are {', '.join(caps or ())} (models.{name}.capabilities, or what "
            "its backend reports)")
