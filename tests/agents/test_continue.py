"""Continue's CLI (`cn`, headless) runs an agent round trip through Mimiverse: it offers
its tools, the model asks to read a file, Continue reads it and sends the result, the model
answers in words. `.ci/run` installs the CLI; without it the test is skipped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.agents.conftest import Upstream
from tests.support.app_server import AppServer

ROOT = Path(__file__).resolve().parents[2]
CN = Path(os.environ.get("MIMIVERSE_CONTINUE_CLI", ROOT / ".ci/node/node_modules/.bin/cn"))

pytestmark = pytest.mark.skipif(not CN.exists(),
                                reason="Continue's CLI is not installed (.ci/run installs it)")


def test_continue_cli_runs_an_agent_round_trip(
    upstream: Upstream, app: AppServer, tmp_path: Path
) -> None:
    behaviour = upstream.server.behaviour
    behaviour.tool_calls = ({"name": "Read", "arguments": {"filepath": "notes.txt"}},)
    behaviour.reply = "The notes say hello."
    config = tmp_path / "config.yaml"
    config.write_text(
        "name: Mimiverse\nversion: 1.0.0\nschema: v1\nmodels:\n"
        "  - name: Mimiverse agent\n    provider: openai\n    model: chat\n"
        f"    apiBase: {app.url}/v1/\n    apiKey: unused\n    roles: [chat, edit, apply]\n"
        "    capabilities: [tool_use]\n", encoding="utf-8")
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (work / "notes.txt").write_text("hello from notes\n", encoding="utf-8")

    done = subprocess.run(
        [str(CN), "-p", "What do my notes say?", "--config", str(config), "--auto"],
        cwd=work, env={**os.environ, "HOME": str(home)}, capture_output=True, text=True,
        timeout=120, check=False)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "The notes say hello."
    assert behaviour.requests[upstream.path] == 2
    sent = upstream.sent()
    assert "Read" in [t["function"]["name"] for t in sent["tools"]]
    call, result = sent["messages"][-2], sent["messages"][-1]
    (asked,) = call["tool_calls"]
    assert result["role"] == "tool" and "hello from notes" in str(result["content"])
    if upstream.kind == "openai":
        assert asked["function"] == {"name": "Read", "arguments": '{"filepath":"notes.txt"}'}
        assert result["tool_call_id"] == asked["id"]
    else:
        assert asked["function"] == {"name": "Read", "arguments": {"filepath": "notes.txt"}}
        assert result["tool_name"] == "Read"
