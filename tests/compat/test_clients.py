"""Requests in the exact shapes Continue, Twinny, llm-ls and the Tabby agent send
(fixtures/, each naming its source) get correct answers over real HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.compat.conftest import QWEN
from tests.servers.behaviour import chat_prompt, default_reply
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer

FIXTURES = Path(__file__).parent / "fixtures"
PREFIX = "def mean(xs):\n    return "
SUFFIX = "\n\nprint(mean([1, 2]))\n"
REPLY = "sum(xs) / len(xs)"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    assert loaded["source"]  # every shape names where it comes from
    return loaded


def answer_text(response: httpx.Response) -> str:
    """The completion text, whatever the protocol and whether streamed or not."""
    kind = response.headers["content-type"]
    if kind.startswith("text/event-stream"):
        blocks = [b.removeprefix("data: ") for b in response.text.strip().split("\n\n")]
        assert blocks[-1] == "[DONE]"
        chunks = [orjson.loads(b) for b in blocks[:-1]]
        choices = [c["choices"][0] for c in chunks if c["choices"]]
        return "".join(c["text"] if "text" in c else c["delta"].get("content", "")
                       for c in choices)
    if kind.startswith("application/x-ndjson"):
        lines = [orjson.loads(line) for line in response.text.splitlines()]
        assert lines[-1]["done"] is True
        return "".join(line.get("response") or line.get("message", {}).get("content", "")
                       for line in lines)
    body = response.json()
    return str(body["response"]) if "response" in body else str(body["choices"][0]["text"])


async def send(http: httpx.AsyncClient, app: AppServer, name: str) -> httpx.Response:
    shape = fixture(name)
    response = await http.request(shape["method"], app.url + shape["path"], json=shape["body"])
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize(("name", "prompt"), [
    # Prefix and suffix apart: FIM through our template.
    ("continue-ollama-fim", QWEN.format(PREFIX, SUFFIX)),
    # Rendered by the client (raw, or holding our family's FIM tokens): sent as is.
    ("continue-ollama-raw", QWEN.format(PREFIX, SUFFIX)),
    ("continue-openai-completion", QWEN.format(PREFIX, SUFFIX)),
    ("twinny-ollama-fim", QWEN.format(PREFIX, SUFFIX)),
    ("twinny-openai-fim", QWEN.format(PREFIX, SUFFIX)),
    ("llm-ls-ollama", QWEN.format(PREFIX, SUFFIX)),
    ("llm-ls-openai", QWEN.format(PREFIX, SUFFIX)),
    # Client snippets in the Qwen2.5-Coder repository form, the current file last.
    ("tabby-agent-completion",
     "<|file_sep|>stats/util.py\ndef total(xs):\n    return sum(xs)\n"
     "<|file_sep|>stats/count.py\ndef count(xs):\n    return len(xs)\n"
     "<|file_sep|>stats/__init__.py\nfrom .mean import mean\n\n"
     "<|file_sep|>stats/mean.py\n" + QWEN.format(PREFIX, SUFFIX)),
])
async def test_completion_shapes_reach_the_model_as_intended(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle, name: str,
    prompt: str,
) -> None:
    ollama_server.behaviour.reply = REPLY
    response = await send(http, app, name)
    assert answer_text(response) == REPLY
    sent = ollama_server.behaviour.last_request["/api/generate"]
    assert sent["prompt"] == prompt and sent["raw"] is True
    # The family's special tokens stop the model whichever way the prompt was made.
    assert "<|endoftext|>" in sent["options"]["stop"]


async def test_continue_chat_through_the_openai_provider(
    app: AppServer, http: httpx.AsyncClient, ollama_server: ServerHandle
) -> None:
    response = await send(http, app, "continue-openai-chat")
    messages = fixture("continue-openai-chat")["body"]["messages"]
    assert answer_text(response) == default_reply(chat_prompt(messages))
    assert ollama_server.behaviour.last_request["/api/chat"]["messages"] == messages


async def test_continue_detects_fim_from_show(app: AppServer, http: httpx.AsyncClient) -> None:
    body = (await send(http, app, "continue-ollama-show")).json()
    # Continue: fimSupported = template includes ".Suffix"; it parses every parameters line
    # with this pattern and stops parsing (FIM undetected) at the first line that fails.
    assert ".Suffix" in body["template"] and "insert" in body["capabilities"]
    pattern = re.compile(r'^(\S+)\s+((?:".*")|\S+)$')
    assert all(pattern.match(line) for line in body["parameters"].split("\n"))
    stops = [orjson.loads(pattern.match(line)[2]) for line in body["parameters"].split("\n")  # type: ignore[index]
             if line.startswith("stop ")]
    assert "<|endoftext|>" in stops
