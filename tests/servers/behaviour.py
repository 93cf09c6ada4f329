"""Shared control state and ASGI plumbing of the protocol test servers.

A test mutates `Behaviour` from its own thread while the server reads it from the server
thread: fields are only ever replaced whole (atomic under the GIL) and the counters are
written under a lock, which is all the thread safety this needs.

Replies are a pure function of the request: `default_reply(prompt)` unless `reply` is set,
cut into "tokens" by `split_tokens` (at most 4 non-space characters each, leading spaces
attached), then limited by max_tokens (in tokens) and stop strings by `plan_reply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

Mode = Literal["ok", "fail", "reject", "hang", "stall", "die", "error", "malformed"]
MODES: tuple[str, ...] = get_args(Mode)
# Modes that send `after_tokens` chunks first, then misbehave.
_MIDSTREAM = frozenset({"stall", "die", "error", "malformed"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")


def split_tokens(text: str) -> list[str]:
    """The test servers' tokenizer: pieces of at most 4 non-space characters."""
    return _TOKEN.findall(text)


def default_reply(prompt: str) -> str:
    """What the servers answer to `prompt` (4 tokens) when no `reply` is configured."""
    return "<reply:" + hashlib.sha1(prompt.encode(), usedforsecurity=False).hexdigest()[:8] + ">"


def chat_prompt(messages: Sequence[Any]) -> str:
    """The text a chat request stands for: one `role: content` line per message."""
    return "".join(f"{m.get('role')}: {m.get('content')}\n" for m in messages)


def schema_instance(schema: Any) -> Any:
    """The smallest value of a JSON Schema's shape: what a constrained model would answer
    (objects get every property, strings "text", numbers 1, enums their first value)."""
    if not isinstance(schema, dict):
        return {}
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: schema_instance(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [schema_instance(schema.get("items"))]
    return {"string": "text", "integer": 1, "number": 1, "boolean": True}.get(str(kind))


def json_reply(fmt: Any, prompt: str) -> str | None:
    """The reply to a request for JSON output (`fmt`: OpenAI's response_format or Ollama's
    format), or None when it asks for none: an instance of the schema, or for plain JSON
    {"reply": default_reply(prompt)}."""
    if fmt in (None, "", {"type": "text"}):
        return None
    schema = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
    elif isinstance(fmt, dict) and fmt.get("type") != "json_object":
        schema = fmt  # Ollama: the schema itself
    if schema is None:
        return orjson.dumps({"reply": default_reply(prompt)}).decode()
    return orjson.dumps(schema_instance(schema)).decode()


def embed_vector(text: str, dim: int) -> list[float]:
    """A unit vector of `dim` floats seeded by the text: equal texts, equal vectors."""
    raw = hashlib.shake_256(text.encode()).digest(4 * dim)
    vec = [n / 2**31 - 1.0 for n in struct.unpack(f"<{dim}I", raw)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


@dataclass(frozen=True)
class Reply:
    chunks: list[str]
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def plan_reply(text: str, prompt: str, max_tokens: int | None, stop: Sequence[str]) -> Reply:
    """Generate `text` token by token as an engine would: a stop string ends it (and is not
    part of the reply, as in both protocols); more tokens than max_tokens end it "length"."""
    chunks: list[str] = []
    produced = ""
    finish = "stop"
    generated = 0
    for token in split_tokens(text):
        if max_tokens is not None and generated >= max_tokens:
            finish = "length"
            break
        generated += 1
        chunks.append(token)
        produced += token
        cuts = [i for s in stop if s and (i := produced.find(s)) >= 0]
        if cuts:
            chunks = _truncate(chunks, min(cuts))
            break
    return Reply(chunks, finish, len(split_tokens(prompt)), generated)


def _truncate(chunks: list[str], length: int) -> list[str]:
    out: list[str] = []
    total = 0
    for chunk in chunks:
        if total + len(chunk) > length:
            if length > total:
                out.append(chunk[: length - total])
            break
        out.append(chunk)
        total += len(chunk)
    return out


@dataclass(eq=False)
class Behaviour:
    """What the server does next (set by tests) and what it saw (read by tests).

    mode: "ok"; "fail": 500 with the protocol's error body; "reject": 404 model not found
    (endpoints that name a model); "hang": accept, never answer. After `after_tokens`
    chunks of a stream (half the body of a JSON answer): "stall": go silent, connection
    open; "die": drop the connection; "error": the protocol's mid-stream error frame (JSON
    answers: as "ok"); "malformed": a frame (or body) that is not JSON.
    """

    mode: Mode = "ok"
    after_tokens: int = 2  # chunks sent before stall / die / error / malformed
    delay_s: float = 0.0  # before each token chunk
    reply: str | None = None  # answer every prompt with this text instead of default_reply
    embedding_dim: int = 8
    models: tuple[str, ...] = ("test-model", "test-embed")
    api_key: str | None = None  # when set, requests must carry `Authorization: Bearer <key>`
    sse_comments: bool = False  # OpenAI: a `: ping` comment before every event
    # Chat answers: with `tool_calls` ({"name", "arguments": object} each) a request that
    # offers tools is answered with those calls, unless its last message is a tool's
    # result (then in words); `reasoning` is thought before the text;
    # `call_ids=False` leaves out the ids OpenAI servers send (Ollama sends none).
    tool_calls: tuple[dict[str, Any], ...] = ()
    reasoning: str | None = None
    call_ids: bool = True
    capabilities: tuple[str, ...] = ("completion", "tools")  # Ollama /api/show
    # path -> exact 200 body sent instead of the real answer: feeds clients broken or
    # unusual answers (ragged vectors, CRLF events, ...) over real HTTP.
    canned: dict[str, bytes] = field(default_factory=dict)

    requests: Counter[str] = field(default_factory=Counter)  # per path
    last_request: dict[str, Any] = field(default_factory=dict)  # path -> parsed JSON body
    last_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    peers: set[str] = field(default_factory=set)  # client "host:port": one per connection
    loaded: list[str] = field(default_factory=list)  # Ollama /api/ps: models kept in memory
    cancelled: int = 0  # requests whose client went away before the answer was complete
    completed: int = 0  # streams sent to the end
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, path: str, body: Any, headers: dict[str, str], peer: str) -> None:
        with self._lock:
            self.requests[path] += 1
            self.last_request[path] = body
            self.last_headers[path] = headers
            self.peers.add(peer)

    def count(self, what: Literal["cancelled", "completed"]) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def configure(self, **changes: Any) -> None:
        """Set control fields by name (the process servers' /_control/behaviour uses this)."""
        allowed = {"mode", "after_tokens", "delay_s", "reply", "embedding_dim", "models",
                   "api_key", "sse_comments", "tool_calls", "reasoning", "call_ids", "capabilities"}
        for name, value in changes.items():
            if name not in allowed:
                raise ValueError(f"unknown behaviour field {name!r}")
            if name == "mode" and value not in MODES:
                raise ValueError(f"mode must be one of {MODES}")
            listed = name in ("models", "tool_calls", "capabilities")
            setattr(self, name, tuple(value) if listed else value)

    def reset(self) -> None:
        fresh = Behaviour()
        with self._lock:
            for f in dataclasses.fields(self):
                if f.name != "_lock":
                    setattr(self, f.name, getattr(fresh, f.name))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "mode": self.mode,
                "requests": dict(self.requests),
                "cancelled": self.cancelled,
                "completed": self.completed,
                "connections": len(self.peers),
            }

    async def wait_until(
        self, predicate: Callable[[Behaviour], bool], within_s: float = 2.0
    ) -> None:
        """Poll from the test's event loop until `predicate(self)` holds (the server runs in
        another thread, so there is nothing to await on directly)."""
        deadline = time.monotonic() + within_s
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {within_s}s: {self.stats()}")
            await asyncio.sleep(0.005)


class Exchange:
    """One request: its parsed body, the send side, and whether the client went away."""

    def __init__(self, app: ProtocolApp, scope: Scope, receive: Receive, send: Send, body: Any):
        self.app = app
        self.scope = scope
        self.body = body
        self._receive = receive
        self._send = send
        self.disconnected = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    def watch(self) -> None:
        # After the body, `receive()` returns only when the client disconnects.
        async def watch() -> None:
            while (await self._receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()

        self._watcher = asyncio.create_task(watch())

    def unwatch(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def start(self, status: int, content_type: bytes, length: int | None = None) -> None:
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes, *, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, content_type: bytes) -> None:
        await self.start(status, content_type, len(body))
        await self.write(body, more=False)

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` unless the client leaves first; False (and counted) if it left."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.disconnected.wait(), seconds)
        if self.disconnected.is_set():
            self.app.behaviour.count("cancelled")
            return False
        return True

    async def hold(self) -> None:
        """Send nothing until the client leaves (counted) or the server stops."""
        while not self.disconnected.is_set() and not self.app.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.disconnected.wait(), 0.05)
        if self.disconnected.is_set():
            self.app.behaviour.count("cancelled")


Handler = Callable[[Exchange], Awaitable[None]]


class ProtocolApp:
    """A raw ASGI app: routing, request recording, the modes, and stream pacing.

    Subclasses add routes and say how their protocol frames errors. Raw ASGI rather than a
    framework because "die" and "stall" need a response that is never finished.
    """

    JSON = b"application/json"

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.closing = False  # set by the harness on stop: held requests give up
        self._routes: dict[tuple[str, str], tuple[Handler, bool]] = {
            ("GET", "/_control/stats"): (self._stats, False),
            ("POST", "/_control/behaviour"): (self._configure, False),
            ("POST", "/_control/reset"): (self._reset, False),
        }
        self._control = set(self._routes)

    def route(self, method: str, path: str, handler: Handler, *, names_model: bool) -> None:
        """`names_model`: the body names a model, so "reject" answers 404 model-not-found."""
        self._routes[(method, path)] = (handler, names_model)

    # --- protocol specifics -------------------------------------------------------------
    def error_body(self, status: int, message: str) -> bytes:
        raise NotImplementedError

    def model_not_found(self, model: str) -> str:
        return f"model {model!r} not found"

    # --- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        await self._dispatch(scope, receive, send, bytes(raw))

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, raw: bytes) -> None:
        key = (scope["method"], scope["path"])
        if scope["method"] == "HEAD":
            key = ("GET", scope["path"])
        entry = self._routes.get(key)
        ex = Exchange(self, scope, receive, send, None)
        if entry is None:
            why = f"no route for {key[0]} {key[1]}"
            await ex.respond(404, self.error_body(404, why), self.JSON)
            return
        handler, names_model = entry
        try:
            ex.body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            await ex.respond(400, self.error_body(400, f"invalid JSON: {exc}"), self.JSON)
            return
        if key in self._control:
            await handler(ex)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client") or ("?", 0)
        self.behaviour.record(scope["path"], ex.body, headers, f"{client[0]}:{client[1]}")
        ex.watch()
        try:
            await self._misbehave_or(ex, handler, names_model, headers)
        finally:
            ex.unwatch()

    async def _misbehave_or(
        self, ex: Exchange, handler: Handler, names_model: bool, headers: dict[str, str]
    ) -> None:
        b = self.behaviour
        canned = b.canned.get(ex.scope["path"])
        if b.api_key is not None and headers.get("authorization") != f"Bearer {b.api_key}":
            await ex.respond(401, self.error_body(401, "invalid API key"), self.JSON)
        elif canned is not None:
            await ex.respond(200, canned, self.JSON)
        elif b.mode == "fail":
            await ex.respond(500, self.error_body(500, "test server told to fail"), self.JSON)
        elif b.mode == "hang":
            await ex.hold()  # returning without a response: uvicorn closes the connection
        elif b.mode == "reject" and names_model:
            model = ex.body.get("model") if isinstance(ex.body, dict) else None
            await ex.respond(404, self.error_body(404, self.model_not_found(str(model))), self.JSON)
        else:
            await handler(ex)

    async def bad_request(self, ex: Exchange, message: str) -> None:
        await ex.respond(400, self.error_body(400, message), self.JSON)

    async def send_json(self, ex: Exchange, obj: Any) -> None:
        """A whole JSON answer; "stall"/"die"/"malformed" break it (half a body, bad JSON)."""
        body = orjson.dumps(obj)
        mode = self.behaviour.mode
        if mode in ("stall", "die"):
            await ex.start(200, self.JSON, len(body))
            await ex.write(body[: len(body) // 2])
            if mode == "stall":
                await ex.hold()
            return  # unfinished response: uvicorn drops the connection
        if mode == "malformed":
            body = body[: len(body) // 2]
        await ex.respond(200, body, self.JSON)

    async def send_stream(
        self,
        ex: Exchange,
        content_type: bytes,
        chunks: Sequence[bytes],
        *,
        head: bytes = b"",
        tail: bytes,
        error: bytes,
        malformed: bytes,
    ) -> None:
        """Stream `head`, then one frame per token (paced by delay_s), then `tail`.

        The mid-stream modes cut in after `after_tokens` frames: "stall" goes silent with the
        connection open, "die" drops the connection, "error" sends the protocol's error frame
        and ends, "malformed" sends a frame that is not JSON and ends.
        """
        b = self.behaviour
        mode = b.mode if b.mode in _MIDSTREAM else None
        await ex.start(200, content_type)
        if head:
            await ex.write(head)
        for i, chunk in enumerate(chunks):
            if mode is not None and i >= b.after_tokens:
                break
            if not await ex.pause(b.delay_s):
                return
            await ex.write(chunk)
        if mode == "stall":
            await ex.hold()
            return
        if mode == "die":
            return
        if mode == "error":
            await ex.write(error, more=False)
            return
        if mode == "malformed":
            await ex.write(malformed, more=False)
            return
        if ex.disconnected.is_set():
            b.count("cancelled")
            return
        await ex.write(tail, more=False)
        b.count("completed")

    # --- control endpoints (for servers running in another process) ---------------------
    async def _stats(self, ex: Exchange) -> None:
        await ex.respond(200, orjson.dumps(self.behaviour.stats()), self.JSON)

    async def _configure(self, ex: Exchange) -> None:
        try:
            self.behaviour.configure(**(ex.body if isinstance(ex.body, dict) else {}))
        except (TypeError, ValueError) as exc:
            await self.bad_request(ex, str(exc))
            return
        await ex.respond(200, orjson.dumps(self.behaviour.stats()), self.JSON)

    async def _reset(self, ex: Exchange) -> None:
        self.behaviour.reset()
        await ex.respond(200, orjson.dumps(self.behaviour.stats()), self.JSON)


# What a health check asks (Ollama: its version; OpenAI: its model list). The gateway's
# start-up report asks each backend once, in the background, so a test that counts
# requests reaching a backend counts the rest.
PROBE_PATHS = frozenset({"/api/version", "/v1/models"})


def beyond_probes(behaviour: Behaviour) -> dict[str, int]:
    """Requests per path, health-check probes left out."""
    return {p: n for p, n in behaviour.requests.items() if p not in PROBE_PATHS}
