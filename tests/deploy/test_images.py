"""deploy/Dockerfile, the root .dockerignore and the Triton image: what they install and
what they let into the build context. No Docker engine runs here, so the health checks
the images and compose declare are run against a real gateway on loopback instead."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.deploy_files import DEPLOY, ROOT, services
from tests.servers.harness import ServerHandle, free_port
from tests.support.app_server import AppServer, serve_app, settings_for

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TRITON_DOCKERFILE = DEPLOY / "triton" / "image" / "Dockerfile"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path} ends inside a continued line"
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in logical]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            found.append([])
        found[-1].append(instruction)
    return found


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: `*` and `?` stay inside one path segment,
    `**` spans segments (moby/patternmatcher's rules)."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return regex


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """The last pattern matching the path or one of its parent folders wins."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").rstrip("/"))
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def tracked_files(folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line]


def test_gateway_image_is_slim_python_and_runs_unprivileged() -> None:
    build, runtime = stages(DOCKERFILE)
    assert build[0] == ("FROM", "python:3.11-slim AS build")
    assert runtime[0] == ("FROM", "python:3.11-slim")
    users = [args for op, args in runtime if op == "USER"]
    assert users == ["mimiverse"]
    assert "--uid 10001" in next(args for op, args in runtime if op == "RUN")
    assert ("ENTRYPOINT", '["mimiverse"]') in runtime
    assert ("EXPOSE", "5000") in runtime
    cmd = next(args for op, args in runtime if op == "CMD")
    assert cmd == '["serve", "--host", "0.0.0.0", "--port", "5000"]'


def test_torch_comes_only_from_the_cpu_index() -> None:
    [build, _] = stages(DOCKERFILE)
    runs = " ".join(args for op, args in build if op == "RUN")
    torch_install = re.search(r"pip install --index-url (\S+)\s+\"\$\(python deploy/"
                              r"torch_requirement\.py pyproject\.toml\)\"", runs)
    assert torch_install and torch_install.group(1) == CPU_INDEX
    # ... before the package, so the package's own torch pin is already satisfied
    assert runs.index(CPU_INDEX) < runs.index('pip install ".[${EXTRAS}]"')
    assert "extra-index-url" not in runs
    assert ("ARG", "EXTRAS=postgres") in build
    printed = subprocess.run(
        [sys.executable, str(DEPLOY / "torch_requirement.py"), str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", printed)
    assert f'"{printed}"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_torch_requirement_refuses_an_unpinned_torch(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\noptional-dependencies = { embed = ["torch>=2"] }\n')
    run = subprocess.run([sys.executable, str(DEPLOY / "torch_requirement.py"), str(pyproject)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "torch must be pinned (==) in the embed extra" in run.stderr


def test_dockerignore_admits_what_the_dockerfile_copies_and_nothing_else() -> None:
    patterns = ignore_patterns()
    copies = [args.split() for op, args in instructions(DOCKERFILE)
              if op == "COPY" and not args.startswith("--from")]
    sources = [src.rstrip("/") for args in copies for src in args[:-1]]
    assert sources == ["pyproject.toml", "README.md", "deploy/torch_requirement.py", "src"]
    admitted = ["pyproject.toml", "README.md", "deploy/torch_requirement.py",
                *tracked_files("src")]
    assert len(admitted) > 50
    for path in admitted:
        assert (ROOT / path).exists(), path
        assert not dockerignored(path, patterns), f"{path} is kept out of the build context"
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "deploy/.env",
                     "deploy/docker-compose.yml", "src/mimiverse/__pycache__/app.cpython-311.pyc",
                     "src/mimiverse.egg-info/PKG-INFO", "bench/loadgen.py", "src/.env"):
        assert dockerignored(kept_out, patterns), kept_out


def test_triton_image_adds_a_pinned_tokenizers_to_the_stock_server() -> None:
    steps = instructions(TRITON_DOCKERFILE)
    assert steps[0] == ("ARG", "TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.06-py3")
    assert steps[1] == ("FROM", "${TRITON_IMAGE}")
    [version] = [a.split("=", 1)[1] for op, a in steps if op == "ARG" and a.startswith("TOKEN")]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert 'pip install "tokenizers==${TOKENIZERS_VERSION}"' in " ".join(a for _, a in steps)
    # the model repository is mounted at run time, never sent to the image build
    build = services()["triton"]["build"]
    assert (DEPLOY / build["context"]).resolve() == TRITON_DOCKERFILE.parent
    assert sorted(p.name for p in TRITON_DOCKERFILE.parent.iterdir()) == ["Dockerfile"]


# -- the declared health checks, run for real -------------------------------------------

def healthcheck_argv(test: list[str], port: int) -> list[str]:
    """A ["CMD", ...] health check as an argv against `port` instead of 5000."""
    assert test[0] == "CMD"
    return [arg.replace("127.0.0.1:5000", f"127.0.0.1:{port}") for arg in test[1:]]


def dockerfile_healthcheck() -> list[str]:
    [args] = [a for op, a in instructions(DOCKERFILE) if op == "HEALTHCHECK"]
    exec_form = args.split(" CMD ", 1)[1]
    command: list[str] = json.loads(exec_form)
    return ["CMD", *command]


@pytest.fixture
def gateway(ollama_server: ServerHandle) -> Iterator[AppServer]:
    server = serve_app(settings_for(("ollama", "ollama", ollama_server.url)))
    yield server
    server.stop()


@pytest.mark.parametrize("source", ["Dockerfile", "compose"])
def test_gateway_healthcheck_passes_when_live_and_fails_when_not(
    gateway: AppServer, source: str
) -> None:
    test = dockerfile_healthcheck() if source == "Dockerfile" else (
        services()["mimiverse"]["healthcheck"]["test"])
    port = int(gateway.url.rsplit(":", 1)[1])
    argv = healthcheck_argv(test, port)
    assert argv[0] == "python" and "/health/live" in argv[-1]
    argv[0] = sys.executable  # the image's `python` is 3.11 with the standard library only
    live = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert live.returncode == 0, live.stderr
    nobody = healthcheck_argv(test, free_port())  # nothing listens there
    nobody[0] = sys.executable
    dead = subprocess.run(nobody, capture_output=True, text=True, timeout=30)
    assert dead.returncode == 1
    assert "Connection refused" in dead.stderr
