"""A chat backend that answers with its own prompt, and embeds as the bag-of-tokens
embedder does: tests see exactly what a prompt held, through the whole gateway."""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mimiverse.backends.base import ChatRequest, Delta
from mimiverse.config import Settings, load_settings
from tests.support.embedder import BowEmbedder

BLOCK = re.compile(r"^\[(\d+)\] (\S+):(\d+)-(\d+)", re.M)


class EchoBackend(BowEmbedder):
    kind = "echo"
    tasks = frozenset({"embedding", "chat"})

    def __init__(self) -> None:
        super().__init__("echo")
        self.prompts: list[str] = []

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        text = "".join(f"{m.role}: {m.content}\n" for m in request.messages)
        self.prompts.append(text)
        for start in range(0, len(text), 50):
            yield Delta(text[start : start + 50])
        yield Delta("", finish_reason="stop")


def echo_settings(chat_prompt_tokens: int = 16384, **more: Any) -> Settings:
    # The tests' repositories live in temporary folders, which clients may then index.
    more.setdefault("index", {"allowed_roots": [tempfile.gettempdir()]})
    return load_settings(
        None,
        backends=[{"name": "echo", "kind": "openai", "url": "http://127.0.0.1:9"}],
        models={
            "completion": {"model": "m", "family": "qwen2.5-coder", "backends": ["echo"]},
            "chat": {"model": "chat-m", "backends": ["echo"],
                     "max_prompt_tokens": chat_prompt_tokens, "max_tokens": 4096},
            "embedding": {"model": "bow-64", "backends": ["echo"]},
        },
        **more,
    )


def blocks(prompt: str) -> list[tuple[str, int, int]]:
    """The numbered source blocks a prompt shows, in order: (path, start, end)."""
    found = [(int(n), p, int(a), int(b)) for n, p, a, b in BLOCK.findall(prompt)]
    assert [n for n, *_ in found] == list(range(1, len(found) + 1))
    return [(p, a, b) for _, p, a, b in found]


def spans(sources: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(s["path"], s["start_line"], s["end_line"]) for s in sources]


async def wait_indexed(root: Path, url: str, http: Any) -> None:
    from tests.api.test_codebase import wait_ready

    await http.post(f"{url}/api/codebase/index", json={"path": str(root)})
    status = await wait_ready(http, url)
    assert status["state"] == "ready" and status["pending_embeddings"] == 0, status
