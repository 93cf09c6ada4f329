"""Answers as streams of events: what the gateway hands every protocol, and what the cache
stores and replays.

Every answer is a stream of TextEvents (deltas, then one `done`), whether it comes from a
backend, the cache (replayed delta for delta) or type-ahead reuse; non-streaming callers
collect it. A chat delta may carry reasoning text and tool-call pieces besides its text;
the final Answer holds them whole.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mimiverse.backends.base import Delta, ToolCall, ToolCallChunk
from mimiverse.backends.toolcalls import CallAssembler
from mimiverse.fim.postprocess import FimPostprocessor
from mimiverse.routing.router import RoutedStream


@dataclass(slots=True)
class Answer:
    """The result of a completion or chat, streamed or not."""

    text: str
    model: str
    backend: str
    latency_ms: float
    cached: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TextEvent:
    """One streamed event: a delta (text, reasoning, tool-call pieces, and the model that
    answers, which streamed chunks name before the answer is whole), or (kind="done")
    the final answer."""

    kind: Literal["delta", "done"]
    text: str = ""
    answer: Answer | None = None
    reasoning: str = ""
    tool_calls: tuple[ToolCallChunk, ...] = ()
    model: str = ""


Events = AsyncIterator[TextEvent]


def ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def text_events(
    stream: RoutedStream, started: float, post: FimPostprocessor | None = None
) -> Events:
    """Deltas (post-processed for FIM), then the answer; with a post-processor, the
    upstream is stopped as soon as one of its rules fires."""
    parts: list[str] = []
    last = Delta()
    finish: str | None = None
    model = stream.model
    try:
        async for delta in stream:
            last = delta
            text = post.feed(delta.text) if post is not None else delta.text
            if text:
                parts.append(text)
                yield TextEvent("delta", text, model=model)
            if post is not None and post.done:
                finish = "stop"
                break
        tail = post.finish() if post is not None else ""
        if tail:
            parts.append(tail)
            yield TextEvent("delta", tail, model=model)
    finally:
        await stream.aclose()
    yield TextEvent("done", answer=_answer(stream, "".join(parts), last, started, finish))


async def chat_events(stream: RoutedStream, started: float) -> Events:
    """A chat's deltas with their reasoning and tool-call pieces, then the whole answer."""
    parts: list[str] = []
    thoughts: list[str] = []
    calls = CallAssembler()
    last = Delta()
    model = stream.model
    try:
        async for delta in stream:
            last = delta
            if delta.reasoning or delta.tool_calls:
                thoughts.append(delta.reasoning)
                calls.add(delta.tool_calls)
                parts.append(delta.text)
                yield TextEvent("delta", delta.text, reasoning=delta.reasoning,
                                tool_calls=delta.tool_calls, model=model)
            elif delta.text:
                parts.append(delta.text)
                yield TextEvent("delta", delta.text, model=model)
    finally:
        await stream.aclose()
    answer = _answer(stream, "".join(parts), last, started, None)
    answer.reasoning = "".join(thoughts)
    answer.tool_calls = calls.calls()
    yield TextEvent("done", answer=answer)


def _answer(stream: RoutedStream, text: str, last: Delta, started: float,
            finish: str | None) -> Answer:
    return Answer(
        text=text, model=stream.model, backend=stream.backend.name,
        latency_ms=ms_since(started), finish_reason=finish or last.finish_reason,
        prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
    )


# -- cache entries --------------------------------------------------------------------------
# A stored answer: {"deltas": [...], "model", "backend", "finish_reason", counts}. A plain
# text delta is stored as its string; one with reasoning or tool-call pieces as
# [text, reasoning, [[index, id, name, arguments], ...]].

Stored = str | list[Any]


def stored_delta(event: TextEvent) -> Stored:
    if not (event.reasoning or event.tool_calls):
        return event.text
    return [event.text, event.reasoning,
            [[c.index, c.id, c.name, c.arguments] for c in event.tool_calls]]


def entry(deltas: list[Stored], answer: Answer) -> dict[str, Any]:
    return {"deltas": deltas, "model": answer.model, "backend": answer.backend,
            "finish_reason": answer.finish_reason, "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens}


def replay_entry(value: dict[str, Any] | None, started: float) -> Events | None:
    """The events of a stored answer, or None when `value` is not one (a stale format)."""
    deltas = value.get("deltas") if value else None
    if value is None or not isinstance(deltas, list):
        return None
    events: list[TextEvent] = []
    calls = CallAssembler()
    model = str(value.get("model", ""))
    try:
        for item in deltas:
            if isinstance(item, str):
                events.append(TextEvent("delta", item, model=model))
                continue
            text, reasoning, pieces = item
            chunks = tuple(ToolCallChunk(int(i), ident, name, str(args))
                           for i, ident, name, args in pieces)
            calls.add(chunks)
            events.append(TextEvent("delta", str(text), reasoning=str(reasoning),
                                    tool_calls=chunks, model=model))
    except (TypeError, ValueError):
        return None
    answer = Answer(
        "".join(e.text for e in events), model,
        str(value.get("backend", "")), ms_since(started), cached=True,
        finish_reason=_opt_str(value.get("finish_reason")),
        prompt_tokens=_opt_int(value.get("prompt_tokens")),
        completion_tokens=_opt_int(value.get("completion_tokens")),
        reasoning="".join(e.reasoning for e in events), tool_calls=calls.calls(),
    )
    return replay(events, answer)


async def replay(events: list[TextEvent], answer: Answer) -> Events:
    for event in events:
        yield event
    yield TextEvent("done", answer=answer)


async def final(events: Events) -> Answer:
    answer: Answer | None = None
    async for event in events:
        if event.answer is not None:
            answer = event.answer
    if answer is None:
        raise AssertionError("event stream ended without a final answer")
    return answer


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) else None
