"""/api/ai/ask, /api/ai/explain, /api/ai/debug: chat grounded in the indexed code.

Streams are server-sent events like /api/ai/chat's, with one `sources` event first
(what the prompt shows, numbered as the prompt numbers them), then `delta`s and `done`
(or `error`). Without `stream`, one JSON answer carries the text and the sources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mimiverse.api.ai import SSE_HEADERS, Sampling, sse, sse_stream
from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.errors import BACKEND_ERRORS, COMMON_ERRORS, error_responses
from mimiverse.assist.prompts import Prompt
from mimiverse.assist.retrieval import Source
from mimiverse.assist.service import Assistant, Question
from mimiverse.errors import InvalidRequest
from mimiverse.gateway import ChatInput, Gateway, TextEvent

MAX_CODE = 200_000  # characters of a selection, code or error output
# Chat clients (Continue, Open WebUI, ...) ask the codebase through the OpenAI and Ollama
# chat routes by starting their last user message with this word.
SWITCH = "@codebase"
SOURCES_HEADER = "X-Mimiverse-Sources"



def sse_schema(*events: str) -> dict[int | str, dict[str, object]]:
    """`responses=` of a route that streams these server-sent events."""
    return {200: {"content": {"text/event-stream": {"schema": {
                      "type": "object", "required": ["event", "data"],
                      "properties": {"event": {"enum": list(events)},
                                     "data": {"type": "string"}}}}},
                  "description": "server-sent events"}}


# Streams: `sources` first, then what /api/ai/chat streams (`delta`s, `done` or `error`).
ASSIST_SSE = sse_schema("sources", "delta", "done", "error")
router = APIRouter(prefix="/api/ai", tags=["assist"],
                   responses=error_responses(*COMMON_ERRORS, 404, 409, *BACKEND_ERRORS))


async def get_assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.assistant
    return assistant


AssistantDep = Annotated[Assistant, Depends(get_assistant)]
RepoField = Field(None, max_length=4096, description="an indexed root; default: the first")


class _Body(Sampling):
    # A field we do not know would be silently dropped: refuse it, naming it.
    model_config = ConfigDict(extra="forbid")

    stream: bool = False

    def chat(self, prompt: Prompt) -> ChatInput:
        return ChatInput(prompt.messages, max_tokens=self.max_tokens,
                         temperature=self.temperature, stop=tuple(self.stop), seed=self.seed)


class AskBody(_Body):
    question: str = Field(min_length=1, max_length=8000)
    repo: str | None = RepoField
    path: str | None = Field(None, max_length=4096,
                             description="the file the selection is from (absolute, or "
                                         "relative to the repository)")
    selection: str | None = Field(None, max_length=MAX_CODE,
                                  description="code the question is about")


class ExplainLines(_Body):
    """Lines of an indexed file."""

    path: str = Field(max_length=4096, description="an indexed file (absolute, or relative "
                                                   "to the repository)")
    start_line: int = Field(ge=1, le=10_000_000)
    end_line: int = Field(ge=1, le=10_000_000)
    repo: str | None = RepoField


class ExplainCode(_Body):
    """Code sent as text."""

    code: str = Field(min_length=1, max_length=MAX_CODE)
    language: str | None = Field(None, max_length=32, pattern=r"^[A-Za-z0-9_+#.\-]*$")
    repo: str | None = RepoField


ExplainBody = ExplainLines | ExplainCode


class DebugBody(_Body):
    error_output: str = Field(min_length=1, max_length=MAX_CODE,
                              description="a stack trace or error output, as printed")
    repo: str | None = RepoField


class SourceOut(BaseModel):
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    role: str = Field(description="match, definition, selection, enclosing, caller or frame")
    line: int | None = Field(None, description="a frame's own line")


class AssistResponse(BaseModel):
    answer: str
    sources: list[SourceOut]
    latency: float = Field(description="milliseconds")
    cached: bool
    model: str
    backend: str


def sources_out(sources: Sequence[Source]) -> list[dict[str, object]]:
    return [s.public() for s in sources]


async def with_sources(sources: Sequence[Source], events: AsyncIterator[TextEvent]
                        ) -> AsyncIterator[bytes]:
    yield sse("sources", {"sources": sources_out(sources)})
    async for chunk in sse_stream(events):
        yield chunk


async def answer(request: Request, gateway: Gateway, body: _Body, prompt: Prompt
                 ) -> AssistResponse | StreamingResponse:
    chat = body.chat(prompt)
    if body.stream:
        # Opened before the status line: "all backends down" is still a real 503/504.
        events = await cancel_on_disconnect(request, gateway.stream_chat(chat))
        return StreamingResponse(with_sources(prompt.sources, events),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    result = await cancel_on_disconnect(request, gateway.chat(chat))
    return AssistResponse(
        answer=result.text, sources=[SourceOut.model_validate(s.public()) for s in prompt.sources],
        latency=result.latency_ms, cached=result.cached, model=result.model,
        backend=result.backend,
    )


@router.post("/ask", response_model=AssistResponse, responses=ASSIST_SSE)
async def ask(body: AskBody, request: Request, gateway: GatewayDep, assistant: AssistantDep
              ) -> AssistResponse | StreamingResponse:
    """Answer a question from the indexed code: the selection's definitions and the
    question's hybrid matches, within the chat model's prompt budget."""
    prompt = await assistant.ask(Question(body.question, body.repo, body.path, body.selection))
    return await answer(request, gateway, body, prompt)


@router.post("/explain", response_model=AssistResponse, responses=ASSIST_SSE)
async def explain(body: ExplainBody, request: Request, gateway: GatewayDep,
                  assistant: AssistantDep) -> AssistResponse | StreamingResponse:
    """Explain lines of an indexed file (with their enclosing definition, the definitions
    of the names they use and their callers), or code sent as text."""
    if isinstance(body, ExplainCode):
        prompt = await assistant.explain_code(body.code, body.language, body.repo)
    else:
        prompt = await assistant.explain_file(body.path, body.start_line, body.end_line,
                                              body.repo)
    return await answer(request, gateway, body, prompt)


@router.post("/debug", response_model=AssistResponse, responses=ASSIST_SSE)
async def debug(body: DebugBody, request: Request, gateway: GatewayDep,
                assistant: AssistantDep) -> AssistResponse | StreamingResponse:
    """Diagnose error output (Python, Node, Go, Rust, Java traces): the repository's
    frames, found by path or by the longest matching path suffix, then a fix as a diff."""
    prompt = await assistant.debug(body.error_output, body.repo)
    return await answer(request, gateway, body, prompt)


# -- the `@codebase` switch of the chat routes -----------------------------------------------

async def codebase_switch(request: Request, chat: ChatInput
                          ) -> tuple[ChatInput, tuple[Source, ...] | None]:
    """A chat whose last user message starts with `@codebase` becomes an ask: the earlier
    messages stay as they are, the question gets the index's sources. Others pass as is."""
    last = chat.messages[-1] if chat.messages else None
    text = last.content.lstrip() if last is not None and last.role == "user" else ""
    if not (text.startswith(SWITCH) and text[len(SWITCH):len(SWITCH) + 1] in ("", " ", "\n",
                                                                               "\t", "\r")):
        return chat, None
    question = text[len(SWITCH):].strip()
    if not question:
        raise InvalidRequest(f"{SWITCH} needs a question after it")
    assistant = await get_assistant(request)
    prompt = await assistant.ask(Question(question, history=chat.messages[:-1]))
    return replace(chat, messages=prompt.messages), prompt.sources


def mark_sources(response: Response, sources: Sequence[Source] | None) -> Response:
    """The sources of an `@codebase` answer, as `path:start-end` items (paths
    percent-encoded), in a header: the chat protocols have no field for them."""
    if sources is not None:
        response.headers[SOURCES_HEADER] = ", ".join(
            f"{quote(s.path, safe='/._-')}:{s.start_line}-{s.end_line}" for s in sources)
    return response
