"""Tabby's API: /v1/completions requests with `segments` (told apart from OpenAI's by that
field, dispatched here by api/compat/openai.py) and GET/POST /v1/health.

Shapes from Tabby's server (crates/tabby/src/services/completion.rs, health.rs) and what
tabby-agent sends (clients/tabby-agent/src/codeCompletion/buildRequest.ts). The client's
context — LSP declarations, then snippets from recently changed files, then from recently
opened files (Tabby's own priority) — becomes FimInput.snippets, `filepath` the path.

Decisions: every field Tabby's server defines is modelled; any other is refused (400
naming it), so nothing is accepted and dropped. `clipboard` and `git_url` are accepted and
not used (Tabby uses them only for its server-side index; ours is configured with `serve
--repo`); `user` names the user in Tabby's event log, and nothing here logs users;
snippets' `score` only orders them, and they come in that order; `edit_history` is read
only by `mode: next_edit_suggestion`, which is refused (400), as are
`debug_options.return_prompt` and `return_snippets` (answers carry no debug data);
`debug_options.raw_prompt` is sent to the model as is;
`disable_retrieval_augmented_code_completion` turns off our index context. Like Tabby,
CRLF text is completed as LF and the answer given back with CRLF. Errors use the OpenAI
shape of the path they share (Tabby's server defines none beyond the status code).
"""

from __future__ import annotations

import asyncio
import os
import platform
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, StringConstraints, field_validator

from mimiverse import __version__
from mimiverse.api.compat.shared import OpenAIError, collect, parse, protocol_responses
from mimiverse.api.deps import GatewayDep, cancel_on_disconnect
from mimiverse.api.limits import MAX_TEXT, NumbersNotBooleans
from mimiverse.fim.templates import ContextFile
from mimiverse.gateway import FimInput, Gateway, RawInput

Path = Annotated[str, StringConstraints(max_length=4096)]
Body = Annotated[str, StringConstraints(max_length=100_000)]

router = APIRouter(tags=["tabby"], responses=protocol_responses(OpenAIError))


class _Tabby(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid")  # refused, naming them (see module doc)


class Declaration(_Tabby):
    filepath: Path
    body: Body


class Snippet(_Tabby):
    filepath: Path
    body: Body
    score: float | None = None


class Segments(_Tabby):
    prefix: str = Field(max_length=MAX_TEXT)
    suffix: str | None = Field(None, max_length=MAX_TEXT)
    filepath: Path | None = None
    git_url: str | None = Field(None, max_length=4096)
    declarations: list[Declaration] | None = Field(None, max_length=64)
    relevant_snippets_from_changed_files: list[Snippet] | None = Field(None, max_length=64)
    relevant_snippets_from_recently_opened_files: list[Snippet] | None = Field(
        None, max_length=64)
    clipboard: str | None = Field(None, max_length=MAX_TEXT)
    edit_history: dict[str, Any] | None = None  # next_edit_suggestion only (refused)

    def snippets(self) -> tuple[ContextFile, ...]:
        items: list[Declaration | Snippet] = [
            *(self.declarations or ()),
            *(self.relevant_snippets_from_changed_files or ()),
            *(self.relevant_snippets_from_recently_opened_files or ()),
        ]
        return tuple(ContextFile(_lf(i.filepath), _lf(i.body)) for i in items)


class DebugOptions(_Tabby):
    raw_prompt: str | None = Field(None, max_length=MAX_TEXT)
    disable_retrieval_augmented_code_completion: bool = False
    return_snippets: bool = Field(False, json_schema_extra={"enum": [False]})
    return_prompt: bool = Field(False, json_schema_extra={"enum": [False]})

    @field_validator("return_snippets", "return_prompt")
    @classmethod
    def _no_debug_data(cls, value: bool) -> bool:
        if value:
            raise ValueError("only false is supported: answers carry no debug data")
        return value


class CompletionBody(_Tabby):
    language: str | None = Field(None, max_length=64)
    segments: Segments
    user: str | None = Field(None, max_length=256)
    debug_options: DebugOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    mode: Literal["standard", "next_edit_suggestion"] = Field(
        "standard", json_schema_extra={"enum": ["standard"]})  # the other: a clear refusal

    @field_validator("mode")
    @classmethod
    def _standard_only(cls, mode: str) -> str:
        if mode != "standard":
            raise ValueError("only mode 'standard' is supported (no next edit suggestions)")
        return mode


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def to_input(body: CompletionBody) -> FimInput | RawInput:
    temperature = body.temperature or 0.0
    debug = body.debug_options or DebugOptions()
    if debug.raw_prompt is not None:
        return RawInput(debug.raw_prompt, temperature=temperature, seed=body.seed)
    s = body.segments
    return FimInput(
        prefix=_lf(s.prefix), suffix=_lf(s.suffix or ""), language=body.language,
        path=s.filepath, temperature=temperature, seed=body.seed, snippets=s.snippets(),
        repo_context=not debug.disable_retrieval_augmented_code_completion,
    )


async def complete(raw: dict[str, Any], request: Request, gateway: Gateway) -> JSONResponse:
    body = parse(CompletionBody, raw)
    answer = await cancel_on_disconnect(request, collect(gateway, to_input(body)))
    s = body.segments
    crlf = "\r\n" in s.prefix or "\r\n" in (s.suffix or "")
    text = answer.text.replace("\n", "\r\n") if crlf else answer.text
    return JSONResponse({"id": f"cmpl-{uuid.uuid4()}", "choices": [{"index": 0, "text": text}]})


_cpu_info: str | None = None


def _read_cpu_info() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# POST: agents for Tabby <= 0.2. Its own operation id, so the OpenAPI schema has no twin.
@router.post("/v1/health", operation_id="tabby_health_post", include_in_schema=False)
@router.get("/v1/health")
async def health(gateway: GatewayDep) -> JSONResponse:
    global _cpu_info
    if _cpu_info is None:
        _cpu_info = await asyncio.to_thread(_read_cpu_info)
    models = gateway.settings.models
    return JSONResponse({
        "model": models.completion.model,
        "chat_model": models.chat.model,
        # Inference runs on the configured backends, not in this process.
        "device": "remote",
        "arch": platform.machine(),
        "cpu_info": _cpu_info,
        "cpu_count": os.cpu_count() or 1,
        "cuda_devices": [],
        "version": {"build_date": "", "build_timestamp": "", "git_sha": "",
                    "git_describe": f"mimiverse-{__version__}"},
        "webserver": False,
    })
