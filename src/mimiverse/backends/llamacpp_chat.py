"""Chat on the embedded llama.cpp, agents included: tools, tool calls, structured output.

llama-cpp-python renders the GGUF's own chat template, tools included, but reads no tool
call back out of what the model writes. So:
- a forced call (tool_choice "required" or one named function) and structured output are
  grammar-constrained: the output can only be the call's JSON (or the schema's), parsed
  into a ToolCall afterwards;
- with tool_choice "auto" the model writes freely, and an answer that opens with
  `<tool_call>` (the Hermes / Qwen form most templates teach) is held back and parsed
  into calls at its end; any other answer streams as text.
`run` is the whole generation; llamacpp.py calls it on its worker thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from llama_cpp import Llama
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from mimiverse.backends.base import ChatMessage, ChatRequest, Delta, ToolCall
from mimiverse.backends.toolcalls import (
    arguments_object,
    arguments_text,
    call_names,
    new_call_id,
    whole_chunks,
)

Emit = Callable[[Delta], None]

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(TOOL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CLOSE), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one chat request is generated."""

    schema: dict[str, Any] | None = None  # the output must match it (grammar)
    any_json: bool = False  # the output must be JSON (json_object without a schema)
    forced: str | None = None  # the output is the arguments of this one function
    calls: bool = False  # the output is {"name": ..., "arguments": ...}
    watch: bool = False  # free text that may be a <tool_call> block

    @property
    def constrained_call(self) -> bool:
        return self.forced is not None or self.calls


def plan(request: ChatRequest) -> Plan:
    tools = request.tools if request.tool_choice != "none" else ()
    if tools and request.tool_choice == "function":
        tool = next(t for t in tools if t.name == request.tool_choice_name)
        return Plan(schema=_object(tool.parameters), forced=tool.name)
    if tools and request.tool_choice == "required":
        return Plan(schema={"anyOf": [{
            "type": "object", "required": ["name", "arguments"],
            "properties": {"name": {"enum": [t.name]}, "arguments": _object(t.parameters)},
        } for t in tools]}, calls=True)
    fmt = request.response_format
    if fmt is not None:
        if fmt.type == "json_schema" and isinstance(fmt.schema, dict):
            return Plan(schema=fmt.schema, watch=bool(tools))
        return Plan(any_json=True, watch=bool(tools))
    return Plan(watch=bool(tools))


def _object(parameters: Any) -> dict[str, Any]:
    return parameters if isinstance(parameters, dict) else {"type": "object"}


def template_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """Messages as chat templates read them (OpenAI's shape, arguments as objects: the
    Hugging Face templates `tojson` them)."""
    names = call_names(messages)
    out: list[dict[str, Any]] = []
    for m in messages:
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": arguments_object(c.arguments)}}
                for c in m.tool_calls]
        if m.role == "tool":
            message["tool_call_id"] = m.tool_call_id
            message["name"] = m.tool_name or names.get(m.tool_call_id or "")
        if m.reasoning:  # the name templates that keep earlier thinking read (Qwen3's)
            message["reasoning_content"] = m.reasoning
        out.append(message)
    return out


def template_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    if not request.tools or request.tool_choice == "none":
        return None
    return [{"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": _object(t.parameters)}}
        for t in request.tools]


def constrained_calls(p: Plan, text: str) -> tuple[ToolCall, ...]:
    """The call(s) a grammar-constrained output spells; ValueError when it is cut short."""
    if p.forced is not None:
        arguments = text.strip()
        arguments_object(arguments)  # complete JSON, or ValueError
        return (ToolCall(new_call_id(), p.forced, arguments),)
    value = orjson.loads(text)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError("the constrained tool call has no function name")
    return (ToolCall(new_call_id(), value["name"], arguments_text(value.get("arguments", {}))),)


def parse_calls(text: str) -> tuple[ToolCall, ...]:
    """`<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks as calls; none when
    any block is not such an object."""
    calls: list[ToolCall] = []
    for block in _CALL.findall(text):
        try:
            value = orjson.loads(block)
        except orjson.JSONDecodeError:
            return ()
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return ()
        calls.append(ToolCall(new_call_id(), value["name"],
                              arguments_text(value.get("arguments", {}))))
    return tuple(calls)


class CallWatch:
    """Free text as it streams, except an answer that opens with `<tool_call>`: held back
    (and so is text that could still become that opening) and parsed at the end."""

    def __init__(self) -> None:
        self._held = ""
        self._decided: bool | None = None  # True: a call; False: text

    def feed(self, text: str) -> str:
        if self._decided is False:
            return text
        self._held += text
        start = self._held.lstrip()
        if self._decided is None and start:
            if start.startswith(TOOL_OPEN):
                self._decided = True
            elif not TOOL_OPEN.startswith(start):
                self._decided = False
                out, self._held = self._held, ""
                return out
        return ""

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """(text still held, calls): held text that parses as calls is calls."""
        calls = parse_calls(self._held) if self._decided else ()
        return ("", calls) if calls else (self._held, ())


class CutShort(Exception):
    """A grammar-constrained tool call ended before its JSON did (max_tokens)."""


def run(llm: Llama, request: ChatRequest, defaults: dict[str, float], cancel: threading.Event,
        emit: Emit) -> str:
    """Generate `request`'s answer, emitting Deltas; returns the finish reason
    ("cancelled" when `cancel` was set: nothing more is emitted then)."""
    how = plan(request)
    # Any: llama-cpp-python types messages per role and chunks as a wide union; roles
    # are checked at the API boundary and chunks are read defensively below.
    messages: Any = template_messages(request.messages)
    tools: Any = template_tools(request)
    chunks: Any = llm.create_chat_completion(
        messages=messages,
        tools=tools,  # rendered by the model's own chat template
        grammar=grammar(how),
        stream=True,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p if request.top_p is not None else defaults["top_p"],
        top_k=request.top_k if request.top_k is not None else int(defaults["top_k"]),
        min_p=request.min_p if request.min_p is not None else defaults["min_p"],
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        repeat_penalty=request.repeat_penalty or 1.0,
        stop=list(request.stop),
        seed=request.seed,
    )
    watch = CallWatch() if how.watch else None
    held: list[str] = []  # a constrained call's JSON, parsed at the end
    finish = "length"
    try:
        # The chat stream has no per-token hook; chunks come once per token except while
        # a possible stop string is held back.
        for chunk in chunks:
            if cancel.is_set():
                return "cancelled"
            choice = chunk["choices"][0]
            text = choice["delta"].get("content") or ""
            if choice.get("finish_reason"):
                finish = "length" if choice["finish_reason"] == "length" else "stop"
            if how.constrained_call:
                held.append(text)
                continue
            text = watch.feed(text) if watch is not None else text
            if text:
                emit(Delta(text=text))
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    calls: tuple[ToolCall, ...] = ()
    if how.constrained_call:
        try:
            calls = constrained_calls(how, "".join(held))
        except ValueError as exc:
            raise CutShort(f"the tool call was cut short ({finish}): {exc}; "
                           "raise max_tokens") from None
    elif watch is not None:
        rest, calls = watch.finish()
        if rest:
            emit(Delta(text=rest))
    if calls:
        emit(Delta(tool_calls=whole_chunks(calls), finish_reason="tool_calls"))
        return "tool_calls"
    emit(Delta(finish_reason=finish))
    return finish


def grammar(how: Plan) -> LlamaGrammar | None:
    """The grammar that holds the output to `how`'s JSON, if any."""
    if how.schema is not None:
        return LlamaGrammar.from_json_schema(orjson.dumps(how.schema).decode(), verbose=False)
    if how.any_json:
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    return None


def template_capabilities(template: str) -> tuple[str, ...]:
    """What a GGUF's chat template shows its model can do: a template that renders `tools`
    was trained with tool calls; one that knows thinking tags or switches, reasoning."""
    caps = ["completion"]
    if "tools" in template:
        caps.append("tools")
    if any(mark in template for mark in ("<think>", "enable_thinking", "reasoning_content")):
        caps.append("thinking")
    return tuple(caps)
