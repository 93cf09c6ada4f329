"""Ask the codebase, explain code, debug errors: retrieval, then a chat through the gateway.

Each builds a `Prompt` (messages plus the sources they show) and hands the messages to
`Gateway.stream_chat` like any chat, so caching (the key holds the retrieved code),
routing, fallback and timeouts are the chat task's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mimiverse.assist import retrieval
from mimiverse.assist.frames import FileMap
from mimiverse.assist.prompts import (
    ASK_SYSTEM,
    DEBUG_SYSTEM,
    EXPLAIN_SYSTEM,
    Prompt,
    build,
    clip_middle,
    fenced,
)
from mimiverse.assist.retrieval import NotInRepository, Source
from mimiverse.assist.tracebacks import Frame, parse_frames
from mimiverse.backends.base import ChatMessage
from mimiverse.errors import InvalidRequest, NotReady, PromptTooLong
from mimiverse.fim.prompt import conservative_tokens
from mimiverse.gateway import Gateway
from mimiverse.index.filetypes import detect_language
from mimiverse.index.service import CodebaseService, Job

SEARCH_MATCHES = 10  # hybrid matches of the question offered to the prompt
SELECTION_NAMES = 8  # identifiers of a selection whose definitions are looked up
FRAMES = 4  # repository frames shown, innermost first
FRAME_WINDOW = 8  # lines each side of a frame's line when no definition encloses it


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    repo: str | None = None
    path: str | None = None
    selection: str | None = None
    history: tuple[ChatMessage, ...] = ()  # earlier turns (the chat routes' @codebase)


class Assistant:
    def __init__(self, gateway: Gateway, codebase: CodebaseService) -> None:
        self.gateway = gateway
        self.codebase = codebase

    @property
    def max_file_bytes(self) -> int:
        return self.codebase.settings.max_file_bytes

    def count(self, text: str) -> int:
        """By the chat model's tokenizer when a backend has it at hand, else an estimate
        that leans high: the prompt must never outgrow the route's budget."""
        for name in self.gateway.settings.models.chat.backends:
            counted = self.gateway.router.backends[name].count_tokens(text)
            if counted is not None:
                return counted
        return conservative_tokens(text)

    def _build(self, system: str, history: Sequence[ChatMessage], before: str, after: str,
               candidates: Sequence[Source]) -> Prompt:
        total = self.gateway.settings.models.chat.max_prompt_tokens
        return build(system, history, before, after, candidates, total, self.count)

    # -- ask -------------------------------------------------------------------------

    async def ask(self, question: Question) -> Prompt:
        """Definitions of the names in the selection first (they are what the question is
        about), then the index's hybrid matches for the question, best first."""
        job, relative = retrieval.locate(self.codebase, question.repo, question.path)
        found = await self.codebase.search(question.text, limit=SEARCH_MATCHES,
                                           repo=str(job.root))
        matches = [Source.of(h.chunk, "match") for h in found.hits]
        defined: list[Source] = []
        before = ""
        if question.selection:
            names = retrieval.names_used(question.selection, SELECTION_NAMES)
            language = detect_language(relative) if relative else None
            defined = await retrieval.definitions(self.codebase, job, names, language)
            label = f"Selected code ({relative}):" if relative else "Selected code:"
            before = fenced(label, question.selection)
        candidates = retrieval.dedupe([*defined, *matches])
        after = f"Question: {question.text}"
        return self._build(ASK_SYSTEM, question.history, before, after, candidates)

    # -- explain ---------------------------------------------------------------------

    async def explain_file(self, path: str, start: int, end: int, repo: str | None,
                           request: str | None = None) -> Prompt:
        """`request`: what the developer asked about the lines, when they said it."""
        job, relative = retrieval.locate(self.codebase, repo, path)
        assert relative is not None
        text = await retrieval.read_indexed(job, relative, self.max_file_bytes)
        if text is None:
            raise NotInRepository(f"path {path!r} is not an indexed file of {job.root}")
        if end < start:
            raise InvalidRequest("end_line must not be before start_line")
        lines = text.split("\n")
        if start > len(lines):
            raise InvalidRequest(f"start_line {start} is past the end of {relative} "
                                 f"({len(lines)} lines)")
        end = min(end, len(lines))
        language = detect_language(relative)
        selection = Source(relative, start, end, None, "selection",
                           retrieval.lines_of(text, start, end), language)
        around = await asyncio.to_thread(retrieval.enclosing, relative, text, start, end)
        outer = [around] if around is not None and around.text != selection.text else []
        names = retrieval.names_used(selection.text, SELECTION_NAMES)
        defined = await retrieval.definitions(self.codebase, job, names, language)
        called = retrieval.short_name(around.symbol if around else None)
        calling = await retrieval.callers(self.codebase, job, called, language) \
            if called else []
        # The enclosing definition holds the selection, and is shown all the same; the
        # rest must add code that neither shows.
        rest = retrieval.dedupe([*defined, *calling], shown=[selection])
        candidates = [selection, *retrieval.dedupe([*outer, *rest])]
        task = f"Explain the selection [1] ({relative}:{start}-{end})."
        if request:
            task += f"\nThe developer asked: {request}"
        prompt = self._build(EXPLAIN_SYSTEM, (), "", task, candidates)
        if not prompt.sources or prompt.sources[0] is not selection:
            raise PromptTooLong(
                f"lines {start}-{end} of {relative} are more than the chat model takes "
                "(models.chat.max_prompt_tokens): explain fewer lines")
        return prompt

    async def explain_code(self, code: str, language: str | None, repo: str | None) -> Prompt:
        """Code sent as text: its names' definitions when a repository is indexed."""
        defined: list[Source] = []
        try:
            job, _ = retrieval.locate(self.codebase, repo, None)
        except NotReady:
            job = None  # nothing indexed: explain the code alone
        if job is not None:
            names = retrieval.names_used(code, SELECTION_NAMES)
            defined = await retrieval.definitions(self.codebase, job, names, language)
        before = fenced("Selected code:", code, language)
        return self._build(EXPLAIN_SYSTEM, (), before, "Explain the selected code.", defined)

    # -- debug -----------------------------------------------------------------------

    async def debug(self, error_output: str, repo: str | None) -> Prompt:
        """The innermost frames in the repository, each as its enclosing function (or the
        lines around it), then definitions of the names on the failing lines."""
        frames = parse_frames(error_output)
        shown: list[Source] = []
        defined: list[Source] = []
        job = self._debug_job(repo)
        if job is not None and frames:
            shown = await self._frame_sources(job, frames)
            found: list[Source] = []
            for source in shown:  # names on each failing line, in its own language
                assert source.line is not None
                at = source.line - source.start_line + 1
                names = retrieval.names_used(retrieval.lines_of(source.text, at, at), 4)
                found.extend(await retrieval.definitions(self.codebase, job, names,
                                                         source.language, per_name=1))
            defined = retrieval.dedupe(found, shown=shown)
        total = self.gateway.settings.models.chat.max_prompt_tokens
        clipped = clip_middle(error_output, max(1000, total))  # ~a third of the budget
        before = fenced("Error output:", clipped)
        return self._build(DEBUG_SYSTEM, (), before,
                           "Diagnose the error, then give the fix as a unified diff.",
                           [*shown, *defined])

    def _debug_job(self, repo: str | None) -> Job | None:
        try:
            return retrieval.locate(self.codebase, repo, None)[0]
        except NotReady:
            if repo is not None:
                raise
            return None  # nothing indexed: diagnose from the error output alone

    async def _frame_sources(self, job: Job, frames: list[Frame]) -> list[Source]:
        paths = await retrieval.indexed_paths(job)
        files = await asyncio.to_thread(FileMap, job.root.as_posix(), paths)
        shown: list[Source] = []
        texts: dict[str, str | None] = {}
        for frame in frames:
            relative = files.lookup(frame.path)
            if relative is None:
                continue  # a library, the runtime, or a file not in this repository
            if relative not in texts:
                texts[relative] = await retrieval.read_indexed(job, relative,
                                                               self.max_file_bytes)
            text = texts[relative]
            if text is None or frame.line > text.count("\n") + 1:
                continue
            source = await asyncio.to_thread(_frame_source, relative, text, frame)
            if not any(s.overlaps(source) for s in shown):  # inner frames shown first
                shown.append(source)
            if len(shown) >= FRAMES:
                break
        return shown


def _frame_source(relative: str, text: str, frame: Frame) -> Source:
    around = retrieval.enclosing(relative, text, frame.line, frame.line)
    if around is not None:
        return Source(relative, around.start_line, around.end_line, around.symbol, "frame",
                      around.text, around.language, frame.line)
    last = text.count("\n") + 1
    start, end = max(1, frame.line - FRAME_WINDOW), min(last, frame.line + FRAME_WINDOW)
    return Source(relative, start, end, frame.function, "frame",
                  retrieval.lines_of(text, start, end), detect_language(relative),
                  frame.line)
