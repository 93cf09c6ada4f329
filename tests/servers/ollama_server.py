"""A loopback Ollama: /api/generate, /api/chat, /api/embed, /api/tags, /api/ps, /api/version.

Run as a process for benchmarks: `python -m tests.servers.ollama_server --port N`.
"""

from __future__ import annotations

import hashlib
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

NDJSON = b"application/x-ndjson"
VERSION = "0.12.6"
CREATED_AT = "2024-01-01T00:00:00Z"  # fixed: answers are a pure function of the request
EXPIRES_AT = "2099-01-01T00:00:00Z"
_MS = 1_000_000  # Ollama reports durations in nanoseconds


class OllamaApp(ProtocolApp):
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        super().__init__(behaviour)
        self.route("GET", "/", self.root, names_model=False)
        self.route("GET", "/api/version", self.version, names_model=False)
        self.route("GET", "/api/tags", self.tags, names_model=False)
        self.route("GET", "/api/ps", self.ps, names_model=False)
        self.route("POST", "/api/generate", self.generate, names_model=True)
        self.route("POST", "/api/chat", self.chat, names_model=True)
        self.route("POST", "/api/show", self.show, names_model=True)
        self.route("POST", "/api/embed", self.embed, names_model=True)

    def error_body(self, status: int, message: str) -> bytes:
        return orjson.dumps({"error": message})

    def model_not_found(self, model: str) -> str:
        return f'model "{model}" not found, try pulling it first'

    async def root(self, ex: Exchange) -> None:
        await ex.respond(200, b"Ollama is running", b"text/plain; charset=utf-8")

    async def version(self, ex: Exchange) -> None:
        await self.send_json(ex, {"version": VERSION})

    async def tags(self, ex: Exchange) -> None:
        await self.send_json(ex, {"models": [_model_entry(m) for m in self.behaviour.models]})

    async def show(self, ex: Exchange) -> None:
        model = ex.body.get("model") if isinstance(ex.body, dict) else None
        if model not in self.behaviour.models:
            await ex.respond(404, self.error_body(404, self.model_not_found(str(model))),
                             self.JSON)
            return
        entry = _model_entry(str(model))
        await self.send_json(ex, {
            "modelfile": f"FROM {model}\n", "parameters": "", "template": "{{ .Prompt }}",
            "details": entry["details"], "model_info": {"general.architecture": "llama"},
            "capabilities": list(self.behaviour.capabilities), "modified_at": CREATED_AT})

    async def ps(self, ex: Exchange) -> None:
        models = []
        for name in list(self.behaviour.loaded):
            entry = _model_entry(name)
            del entry["modified_at"]
            entry.update(expires_at=EXPIRES_AT, size_vram=entry["size"], context_length=4096)
            models.append(entry)
        await self.send_json(ex, {"models": models})

    async def generate(self, ex: Exchange) -> None:
        body = ex.body
        model, options = await self._common(ex)
        if model is None:
            return
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            await self.bad_request(ex, "prompt must be a string")
            return
        reply = self._plan(prompt, options)
        if body.get("stream", True) is False:
            await self.send_json(ex, {"model": model, "created_at": CREATED_AT,
                                      "response": reply.text, **_final(reply)})
            return
        frames = [_line({"model": model, "created_at": CREATED_AT, "response": chunk,
                         "done": False}) for chunk in reply.chunks]
        tail = _line({"model": model, "created_at": CREATED_AT, "response": "", **_final(reply)})
        await self._stream(ex, model, frames, tail)

    async def chat(self, ex: Exchange) -> None:
        body = ex.body
        model, options = await self._common(ex)
        if model is None:
            return
        messages = body.get("messages", [])
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            await self.bad_request(ex, "messages must be a list of objects")
            return
        b = self.behaviour
        prompt = chat_prompt(messages)
        reply = self._plan(prompt, options, json_reply(body.get("format"), prompt))
        # As Ollama: whole calls, arguments as objects, no ids; done_reason stays "stop".
        calls = [{"function": {"index": i, "name": c["name"],
                               "arguments": c.get("arguments", {})}}
                 for i, c in enumerate(b.tool_calls)] \
            if body.get("tools") and messages and messages[-1].get("role") != "tool" else []
        thinking = b.reasoning if body.get("think") not in (None, False) else None
        if body.get("stream", True) is False:
            message = _message("" if calls else reply.text)
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            await self.send_json(ex, {"model": model, "created_at": CREATED_AT,
                                      "message": message, **_final(reply)})
            return
        messages_out = [{**_message(""), "thinking": t} for t in split_tokens(thinking or "")]
        messages_out += [{**_message(""), "tool_calls": calls}] if calls \
            else [_message(chunk) for chunk in reply.chunks]
        frames = [_line({"model": model, "created_at": CREATED_AT, "message": m,
                         "done": False}) for m in messages_out]
        tail = _line({"model": model, "created_at": CREATED_AT, "message": _message(""),
                      **_final(reply)})
        await self._stream(ex, model, frames, tail)

    async def embed(self, ex: Exchange) -> None:
        body = ex.body
        model, _ = await self._common(ex)
        if model is None:
            return
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            await self.bad_request(ex, "input must be a string or a list of strings")
            return
        dim = body.get("dimensions") or self.behaviour.embedding_dim
        if not isinstance(dim, int) or dim < 1:
            await self.bad_request(ex, "dimensions must be a positive integer")
            return
        await self.send_json(ex, {
            "model": model,
            "embeddings": [embed_vector(t, dim) for t in texts],
            "total_duration": 2 * _MS,
            "load_duration": _MS,
            "prompt_eval_count": sum(len(split_tokens(t)) for t in texts),
        })

    async def _common(self, ex: Exchange) -> tuple[str | None, dict[str, Any]]:
        """The model and options of an inference request, or (None, {}) once answered 400."""
        body = ex.body
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            await self.bad_request(ex, "model is required")
            return None, {}
        options = body.get("options") or {}
        if not isinstance(options, dict):
            await self.bad_request(ex, "options must be an object")
            return None, {}
        # Like Ollama: a request loads the model; keep_alive 0 unloads it afterwards.
        keep = body.get("keep_alive")
        loaded = [m for m in self.behaviour.loaded if m != model]
        self.behaviour.loaded = loaded if keep in (0, "0", "0s") else [*loaded, model]
        return model, options

    def _plan(self, prompt: str, options: dict[str, Any], text: str | None = None) -> Reply:
        limit = options.get("num_predict")
        # -1 means no limit and -2 "fill the context": both unbounded here.
        max_tokens = limit if isinstance(limit, int) and limit >= 0 else None
        stop = options.get("stop") or []
        if text is None:
            text = self.behaviour.reply if self.behaviour.reply is not None \
                else default_reply(prompt)
        return plan_reply(text, prompt, max_tokens, [s for s in stop if isinstance(s, str)])

    async def _stream(self, ex: Exchange, model: str, frames: list[bytes], tail: bytes) -> None:
        await self.send_stream(
            ex, NDJSON, frames, tail=tail,
            error=_line({"error": "llama runner process has terminated: test server error"}),
            malformed=b'{"model": "' + model.encode() + b'", "response": "unterminated\n',
        )


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def _message(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def _final(reply: Reply) -> dict[str, Any]:
    return {
        "done": True,
        "done_reason": reply.finish_reason,
        "total_duration": (3 + reply.completion_tokens) * _MS,
        "load_duration": _MS,
        "prompt_eval_count": reply.prompt_tokens,
        "prompt_eval_duration": _MS,
        "eval_count": reply.completion_tokens,
        "eval_duration": max(1, reply.completion_tokens) * _MS,
    }


def _model_entry(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": CREATED_AT,
        "size": 1_000_000,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "1M",
            "quantization_level": "F16",
        },
    }


def main(argv: list[str] | None = None) -> None:
    from tests.servers.harness import cli

    cli(OllamaApp, argv, description="loopback Ollama test server")


if __name__ == "__main__":
    main()
