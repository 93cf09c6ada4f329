"""The `mimiverse` command line, in-process (CliRunner) and as a real server process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mimiverse.cli.main import app
from tests.servers.behaviour import default_reply
from tests.servers.harness import ServerHandle, free_port

runner = CliRunner()


def write_config(tmp_path: Path, url: str, kind: str = "ollama", extra: str = "") -> Path:
    path = tmp_path / "mimiverse.toml"
    path.write_text(f"""
[[backends]]
name = "local"
kind = "{kind}"
url = "{url}"

[models.completion]
model = "qwen2.5-coder:1.5b"
backends = ["local"]

[models.chat]
model = "test-model"
backends = ["local"]

[models.embedding]
model = "test-embed"
backends = ["local"]
{extra}
""")
    return path


def test_complete_at_file_line_col(tmp_path: Path, ollama_server: ServerHandle) -> None:
    source = tmp_path / "app.py"
    source.write_text("def add(a, b):\n    return \n")
    config = write_config(tmp_path, ollama_server.url)
    ollama_server.behaviour.reply = "a + b"
    result = runner.invoke(app, ["complete", f"{source}:2:12", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "a + b"
    prompt = ollama_server.behaviour.last_request["/api/generate"]["prompt"]
    # family inferred from the model name; the cursor splits line 2 after "return "
    assert prompt == "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>"


def test_complete_with_prefix_and_suffix(tmp_path: Path, openai_server: ServerHandle) -> None:
    config = write_config(tmp_path, openai_server.url, kind="openai")
    result = runner.invoke(app, ["complete", "--prefix", "x = ", "--suffix", "\n",
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    expected = default_reply("<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>")
    assert result.stdout.splitlines()[0] == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["complete"], "give either FILE:LINE:COL or --prefix"),
        (["complete", "nope.py:1:1"], "cannot read nope.py"),
        (["complete", "nope.py"], "is not FILE:LINE:COL"),
    ],
)
def test_complete_bad_arguments(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.stderr


def test_position_outside_file(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    result = runner.invoke(app, ["complete", f"{source}:9:1"])
    assert result.exit_code == 1
    assert "line 9 is outside it" in result.stderr


@pytest.mark.parametrize("command", [["index"], ["eval", "search"], ["eval", "fim"],
                                     ["eval", "ask"]])
def test_commands_on_a_folder_refuse_a_missing_one(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nope"
    result = runner.invoke(app, [*command, str(missing)])
    assert result.exit_code == 1
    assert f"{missing} is not a directory" in result.stderr


def test_chat_streams_to_stdout(tmp_path: Path, ollama_server: ServerHandle) -> None:
    config = write_config(tmp_path, ollama_server.url)
    ollama_server.behaviour.reply = "a breaker stops calling a failing service"
    result = runner.invoke(app, ["chat", "what is a breaker?", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "a breaker stops calling a failing service\n"


def test_doctor_explains_a_missing_ollama(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 1
    assert "ollama serve" in result.stdout
    assert "completion" in result.stdout and "no reachable backend" in result.stdout
    assert "3 task(s) cannot be served" in result.stderr


def test_doctor_and_models_with_a_running_backend(
    tmp_path: Path, ollama_server: ServerHandle
) -> None:
    config = write_config(tmp_path, ollama_server.url)
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "✓ chat" in result.stdout and "✓ embedding" in result.stdout
    # the completion model is not among those the server lists: say how to get it
    assert "ollama pull qwen2.5-coder:1.5b" in result.stdout
    result = runner.invoke(app, ["models", "--config", str(config)])
    assert result.exit_code == 0
    assert "test-model, test-embed" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[server]\nport = 99999', "server.port: Input should be less than or equal to 65535"),
        ('[cache]\nkind = "disk"', "cache.kind: Input should be 'memory' or 'redis'"),
        ('[breaker]\nfailurez = 3', "breaker.failurez: Extra inputs are not permitted"),
        ('[models.chat]\nmodel = "m"\nbackends = ["ghost"]', "names 'ghost', which is not a"),
        ("[server\n", "is not valid TOML"),
    ],
)
def test_invalid_configuration_fails_at_start_naming_the_field(
    tmp_path: Path, extra: str, message: str
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:11434")
    if extra.startswith("[models.chat]"):
        config.write_text(config.read_text().replace(
            '[models.chat]\nmodel = "test-model"\nbackends = ["local"]', extra))
    else:
        config.write_text(config.read_text() + extra)
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert message in result.stderr


def test_unknown_family_fails_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:11434")
    config.write_text(config.read_text().replace("qwen2.5-coder:1.5b", "llama3:8b"))
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert "llama3:8b" in result.stderr and "qwen2.5-coder" in result.stderr


def test_serve_runs_as_a_process_and_answers(tmp_path: Path, ollama_server: ServerHandle) -> None:
    port = free_port()
    config = write_config(tmp_path, ollama_server.url, extra=f"[server]\nport = {port}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimiverse.cli.main", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert r.json() == {"status": "ok"}
        r = httpx.post(f"http://127.0.0.1:{port}/api/ai/fim",
                       json={"prefix": "SECRET_PREFIX_123"}, trust_env=False)
        assert r.status_code == 200 and r.json()["backend"] == "local"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert proc.returncode == -15
    assert b"Finished server process" in out
    assert b"SECRET_PREFIX_123" not in out  # code never reaches the logs by default
