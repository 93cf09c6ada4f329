"""POST /api/ai/ui-to-code: a picture of a user interface (a screenshot or a mock-up), an
optional instruction and a target (html, react, vue, ...) in; the code streamed out.

It is a chat with one image, sent where images go (the chat model when it can see, else
the vision model, [models.vision]), so limits, routing, caching and errors are chat's.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mimiverse.api.ai import SSE_RESPONSE, event_stream
from mimiverse.api.chat_fields import checked_image, image_from_url
from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.errors import BACKEND_ERRORS, COMMON_ERRORS, error_responses
from mimiverse.api.lean import LeanRoute
from mimiverse.api.limits import NumbersNotBooleans
from mimiverse.backends.base import ChatMessage, Image
from mimiverse.gateway import ChatInput

router = APIRouter(prefix="/api/ai", tags=["ai"], route_class=LeanRoute,
                   responses=error_responses(*COMMON_ERRORS, 413, *BACKEND_ERRORS))

Target = Literal["html", "react", "vue", "svelte", "angular", "tailwind", "flutter",
                 "swiftui", "jetpack-compose"]
WHAT = {
    "html": "one self-contained HTML file with its CSS in a <style> element",
    "react": "one React function component in TypeScript (TSX), styled with CSS modules",
    "vue": "one Vue 3 single-file component (<script setup lang=\"ts\">, <template>, "
           "<style scoped>)",
    "svelte": "one Svelte component",
    "angular": "one standalone Angular component (TypeScript, inline template and styles)",
    "tailwind": "one HTML file styled only with Tailwind CSS classes",
    "flutter": "one Flutter widget in Dart",
    "swiftui": "one SwiftUI view",
    "jetpack-compose": "one Jetpack Compose @Composable function in Kotlin",
}


class UiToCodeBody(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid")  # refused, naming them: nothing is dropped

    image: str = Field(max_length=30_000_000,
                       description="base64, a data: URL or an http(s) URL")
    instruction: str = Field("", max_length=16_384, description="what to build or change")
    target: Target = "html"
    stream: bool = True
    max_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)

    def to_input(self) -> ChatInput:
        image: Image = image_from_url(self.image) if self.image.startswith(
            ("data:", "http://", "https://")) else checked_image(self.image)
        system = (f"You turn pictures of user interfaces into code. Answer with "
                  f"{WHAT[self.target]} that reproduces the picture: its layout, text, "
                  "colours and spacing. Answer with the code only, no explanation.")
        ask = self.instruction or "Write the code for this interface."
        return ChatInput((ChatMessage("system", system), ChatMessage("user", ask, (image,))),
                         self.max_tokens, self.temperature)


class UiToCodeResponse(BaseModel):
    code: str
    target: Target
    finish_reason: str | None
    latency: float
    cached: bool
    model: str
    backend: str


@router.post("/ui-to-code", response_model=UiToCodeResponse, responses=SSE_RESPONSE)
async def ui_to_code(body: UiToCodeBody, request: Request,
                     gateway: GatewayDep) -> UiToCodeResponse | StreamingResponse:
    """Streams as /api/ai/chat does (`delta` events, then `done`) unless `stream` is false."""
    chat = body.to_input()
    if body.stream:
        return event_stream(await cancel_on_disconnect(request, gateway.stream_chat(chat)))
    answer = await cancel_on_disconnect(request, gateway.chat(chat))
    return UiToCodeResponse(code=answer.text, target=body.target,
                            finish_reason=answer.finish_reason, latency=answer.latency_ms,
                            cached=answer.cached, model=answer.model, backend=answer.backend)
