"""Gateway CPU per chat request, plain and with an agent's tools (bench/gateway_overhead.py).

An agent request is a chat that carries tool definitions: Continue's agent mode sends nine
in about 5.6 kB. This part measures what the gateway's process spends per uncached,
streamed /v1/chat/completions request, plain and with nine such tools (same messages, same
reply from the test server), in interleaved blocks of sequential requests; the figure is
the median over blocks of CPU seconds / requests. Budget: tools cost at most 10 % more.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import benchlib as bl

BUDGET_RATIO = 1.10


# What an editor agent's tool descriptions add to each (how to call it, when not to).
_USAGE = (" Call it with the arguments described below; paths are always relative to the "
          "workspace root and never absolute. Prefer it over asking the user when the "
          "answer can be found in the workspace.")


def _tool(name: str, what: str, params: dict[str, str]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": what + _USAGE,
        "parameters": {"type": "object", "required": list(params),
                       "properties": {p: {"type": "string", "description": d}
                                      for p, d in params.items()}}}}


# Nine tools shaped like an editor agent's (read, edit, search, run...): ~5.5 kB of JSON.
TOOLS = [
    _tool("read_file", "Use this tool to read the contents of an existing file in the "
          "workspace, given its path relative to the workspace root.",
          {"filepath": "The path of the file to read, relative to the root of the workspace."}),
    _tool("create_new_file", "Create a new file. Only use this when a file does not exist "
          "and should be created.", {"filepath": "The path where the new file should be "
                                     "created, relative to the workspace root.",
                                     "contents": "The contents to write to the new file."}),
    _tool("run_terminal_command", "Run a terminal command in the current directory. The "
          "shell is not stateful and will not remember any previous commands.",
          {"command": "The command to run. This will be passed directly into the shell."}),
    _tool("file_glob_search", "Search for files recursively in the project using glob "
          "patterns. Supports ** for recursive directory search.",
          {"pattern": "Glob pattern for file path matching."}),
    _tool("view_diff", "View the current diff of working changes in the repository.",
          {"path": "Optional path to limit the diff to, relative to the workspace root."}),
    _tool("read_currently_open_file", "Read the currently open file in the IDE. If the "
          "user seems to be referring to a file that you can't see, try using this.",
          {"reason": "Why the currently open file is needed."}),
    _tool("ls", "List files and folders in a given directory of the workspace.",
          {"dirPath": "The directory path relative to the root of the project.",
           "recursive": "If true, lists files and folders recursively."}),
    _tool("edit_existing_file", "Use this tool to edit an existing file. If you don't know "
          "the contents of the file, read it first. Describe the changes precisely.",
          {"filepath": "The path of the file to edit, relative to the root of the workspace.",
           "changes": "Any modifications to the file, showing only needed changes."}),
    _tool("grep_search", "Perform a search over the repository using ripgrep. Output may "
          "be truncated, so use targeted queries.",
          {"query": "The search query to use. Must be a valid ripgrep regex expression."}),
]


def measure(gateway: bl.Proc, *, requests: int, blocks: int) -> dict[str, Any]:
    """Interleaved blocks of `requests` sequential streamed chats per kind."""
    import httpx

    tag = secrets.token_hex(4)
    headers = {"Content-Type": "application/json"}

    def body(kind: str, n: int) -> bytes:
        chat: dict[str, Any] = {
            "model": bl.MODEL, "stream": True, "temperature": bl.UNCACHED_TEMPERATURE,
            "max_tokens": 16, "messages": [
                {"role": "system", "content": "You are a coding agent in the user's editor."},
                {"role": "user", "content": f"Find where the config is loaded ({tag} {n})."}]}
        if kind == "tools":
            chat["tools"] = TOOLS
        return json.dumps(chat).encode()

    per_request: dict[str, list[float]] = {"plain": [], "tools": []}
    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client, \
            bl.gc_paused():

        def run_block(kind: str, start: int) -> float:
            bodies = [body(kind, start + i) for i in range(requests)]
            cpu = gateway.cpu()
            for raw in bodies:
                with client.stream("POST", "/v1/chat/completions", content=raw,
                                   headers=headers) as response:
                    text = b"".join(response.iter_raw())
                if response.status_code != 200 or not text.rstrip().endswith(b"[DONE]"):
                    raise RuntimeError(f"chat failed: {response.status_code} {text[-200:]!r}")
            return (gateway.cpu() - cpu) / requests * 1000

        run_block("plain", 0)  # warm-up, not reported
        run_block("tools", 0)
        for b in range(blocks):
            order = ("plain", "tools") if b % 2 == 0 else ("tools", "plain")
            for kind in order:
                per_request[kind].append(run_block(kind, (b + 1) * requests))
    plain, tools = bl.median(per_request["plain"]), bl.median(per_request["tools"])
    return {"requests": requests, "blocks": blocks, "plain_ms": plain, "tools_ms": tools,
            "ratio": tools / plain, "tools_bytes": len(json.dumps(TOOLS)),
            "plain_blocks": per_request["plain"], "tools_blocks": per_request["tools"]}


def budgets(c: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(f"chat with tools ≤ {BUDGET_RATIO:.2f} × plain chat (gateway CPU per request)",
             f"{c['ratio']:.3f} ×", c["ratio"] <= BUDGET_RATIO)]


def report(c: dict[str, Any]) -> str:
    rows = [["plain chat", f"{c['plain_ms']:.3f}"],
            [f"chat with 9 tools ({c['tools_bytes']:,} bytes of tools)", f"{c['tools_ms']:.3f}"],
            ["**ratio** (tools / plain)", f"**{c['ratio']:.3f}**"]]
    return "\n".join([
        f"Uncached streamed `/v1/chat/completions`, {c['blocks']} interleaved blocks of "
        f"{c['requests']} sequential requests per kind; gateway process CPU per request, "
        "median over blocks (the test server replies the same text to both):", "",
        bl.table(["gateway CPU per request", "ms"], rows), "",
        bl.budget_lines(budgets(c)),
    ])
