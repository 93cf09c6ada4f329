"""A loopback OpenAI-compatible server: /v1/completions, /v1/chat/completions (both with SSE
streaming), /v1/embeddings (float or base64), /v1/models.

Run as a process for benchmarks: `python -m tests.servers.openai_server --port N`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

import orjson

from tests.servers.behaviour import (
    Behaviour,
    Exchange,
    ProtocolApp,
    Reply,
    chat_prompt,
    default_reply,
    embed_vector,
    json_reply,
    plan_reply,
    split_tokens,
)

SSE = b"text/event-stream"
CREATED = 1_700_000_000  # fixed: answers are a pure function of the request
_DONE = b"data: [DONE]\n\n"
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                404: "invalid_request_error"}


class OpenAIApp(ProtocolApp):
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        super().__init__(behaviour)
        self.route("GET", "/health", self.health, names_model=False)
        self.route("GET", "/v1/models", self.models, names_model=False)
        self.route("POST", "/v1/completions", self.completions, names_model=True)
        self.route("POST", "/v1/chat/completions", self.chat, names_model=True)
        self.route("POST", "/v1/embeddings", self.embeddings, names_model=True)

    def error_body(self, status: int, message: str) -> bytes:
        code = {401: "invalid_api_key", 404: "model_not_found"}.get(status)
        return orjson.dumps({"error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": "model" if status == 404 else None,
            "code": code,
        }})

    def model_not_found(self, model: str) -> str:
        return f"The model `{model}` does not exist or you do not have access to it."

    async def health(self, ex: Exchange) -> None:
        await self.send_json(ex, {"status": "ok"})

    async def models(self, ex: Exchange) -> None:
        await self.send_json(ex, {"object": "list", "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "mimiverse-tests"}
            for m in self.behaviour.models
        ]})

    async def completions(self, ex: Exchange) -> None:
        body = ex.body
        model = await self._model(ex)
        if model is None:
            return
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            await self.bad_request(ex, "prompt must be a string (or a list of one)")
            return
        reply = self._plan(prompt, body, body.get("max_tokens", 16))
        base = {"id": "cmpl-" + _digest(prompt), "object": "text_completion",
                "created": CREATED, "model": model}
        if not body.get("stream"):
            choice = {"text": reply.text, "index": 0, "logprobs": None,
                      "finish_reason": reply.finish_reason}
            await self.send_json(ex, {**base, "choices": [choice], "usage": _usage(reply)})
            return

        def choice_of(text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

        await self._stream(ex, base, reply, [choice_of(c, None) for c in reply.chunks],
                           choice_of("", reply.finish_reason), head=None)

    async def chat(self, ex: Exchange) -> None:
        body = ex.body
        model = await self._model(ex)
        if model is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            await self.bad_request(ex, "messages must be a list of objects")
            return
        b = self.behaviour
        prompt = chat_prompt(messages)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        reply = self._plan(prompt, body, limit, json_reply(body.get("response_format"), prompt))
        # A model that has its tool's result answers in words.
        calls = [self._call(i, c, prompt) for i, c in enumerate(b.tool_calls)] \
            if body.get("tools") and body.get("tool_choice") != "none" \
            and messages and messages[-1].get("role") != "tool" else []
        finish = "tool_calls" if calls else reply.finish_reason
        base = {"id": "chatcmpl-" + _digest(prompt), "object": "chat.completion",
                "created": CREATED, "model": model}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant",
                                       "content": None if calls else reply.text,
                                       "refusal": None}
            if b.reasoning:
                message["reasoning_content"] = b.reasoning
            if calls:
                message["tool_calls"] = calls
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            await self.send_json(ex, {**base, "choices": [choice], "usage": _usage(reply)})
            return
        base["object"] = "chat.completion.chunk"

        def choice_of(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}

        deltas = [{"reasoning_content": r} for r in split_tokens(b.reasoning or "")]
        deltas += [{"tool_calls": [piece]} for piece in _pieces(calls)] if calls \
            else [{"content": c} for c in reply.chunks]
        role = choice_of({"role": "assistant", "content": ""})
        await self._stream(ex, base, reply, [choice_of(d) for d in deltas],
                           choice_of({}, finish), head=role)

    def _call(self, index: int, call: dict[str, Any], prompt: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "function", "function": {
            "name": call["name"], "arguments": orjson.dumps(call.get("arguments", {})).decode()}}
        if self.behaviour.call_ids:
            out["id"] = f"call_{index}_{_digest(prompt)[:8]}"
        return out

    async def embeddings(self, ex: Exchange) -> None:
        body = ex.body
        model = await self._model(ex)
        if model is None:
            return
        raw = body.get("input")
        items = [raw] if isinstance(raw, str) or _is_tokens(raw) else raw
        if not isinstance(items, list) or not items:
            await self.bad_request(ex, "input must be a non-empty string or list")
            return
        # Token-id inputs are embedded by their ids' text: still a pure function of the input.
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in items
                 if isinstance(t, str) or _is_tokens(t)]
        if len(texts) != len(items):
            await self.bad_request(ex, "input items must be strings or token lists")
            return
        dim = body.get("dimensions") or self.behaviour.embedding_dim
        fmt = body.get("encoding_format") or "float"
        if not isinstance(dim, int) or dim < 1 or fmt not in ("float", "base64"):
            await self.bad_request(ex, "bad dimensions or encoding_format")
            return
        data = []
        for i, text in enumerate(texts):
            vec = embed_vector(text, dim)
            value: Any = vec if fmt == "float" else _base64(vec)
            data.append({"object": "embedding", "embedding": value, "index": i})
        tokens = sum(len(split_tokens(t)) for t in texts)
        await self.send_json(ex, {"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _model(self, ex: Exchange) -> str | None:
        model = ex.body.get("model") if isinstance(ex.body, dict) else None
        if not isinstance(model, str) or not model:
            await self.bad_request(ex, "you must provide a model parameter")
            return None
        return model

    def _plan(self, prompt: str, body: dict[str, Any], limit: Any,
              text: str | None = None) -> Reply:
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]
        max_tokens = limit if isinstance(limit, int) and limit >= 0 else None
        if text is None:
            text = self.behaviour.reply if self.behaviour.reply is not None \
                else default_reply(prompt)
        return plan_reply(text, prompt, max_tokens, stop)

    async def _stream(
        self,
        ex: Exchange,
        base: dict[str, Any],
        reply: Reply,
        choices: list[dict[str, Any]],
        finish: dict[str, Any],
        *,
        head: dict[str, Any] | None,
    ) -> None:
        options = ex.body.get("stream_options") or {}
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        # With include_usage every chunk carries `usage: null` and one more chunk follows
        # the last choice, with `choices: []` and the counts (as OpenAI sends it).
        extra: dict[str, Any] = {"usage": None} if with_usage else {}
        comment = b": ping\n\n" if self.behaviour.sse_comments else b""

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            return comment + b"data: " + orjson.dumps({**base, "choices": choices, **extra,
                                                       **more}) + b"\n\n"

        frames = [event([choice]) for choice in choices]
        tail = event([finish])
        if with_usage:
            tail += event([], usage=_usage(reply))
        error = {"message": "test server error mid-stream", "type": "server_error",
                 "param": None, "code": None}
        await self.send_stream(
            ex, SSE, frames,
            head=event([head]) if head is not None else b"",
            tail=tail + _DONE,
            error=b"data: " + orjson.dumps({"error": error}) + b"\n\n" + _DONE,
            malformed=b'data: {"id": "broken", "choices": [\n\n' + _DONE,
        )


def _pieces(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls as OpenAI streams them: index, id, type and name first (no arguments yet),
    then the arguments' JSON text in fragments of at most 8 characters."""
    pieces: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        head = {k: v for k, v in call.items() if k != "function"}
        pieces.append({"index": index, **head,
                       "function": {"name": call["function"]["name"], "arguments": ""}})
        text = call["function"]["arguments"]
        pieces += [{"index": index, "function": {"arguments": text[i:i + 8]}}
                   for i in range(0, len(text), 8)]
    return pieces


def _usage(reply: Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:24]


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)


def _base64(vec: list[float]) -> str:
    # The OpenAI wire format for encoding_format=base64: little-endian float32.
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def main(argv: list[str] | None = None) -> None:
    from tests.servers.harness import cli

    cli(OpenAIApp, argv, description="loopback OpenAI-compatible test server")


if __name__ == "__main__":
    main()
