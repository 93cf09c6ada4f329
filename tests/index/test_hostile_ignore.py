"""A hostile ignore file cannot stall indexing, nor the server while it indexes.

`*a*a*...*b` against a long name of `a`s is the textbook catastrophic backtracking case:
with a backtracking engine each extra `*a` multiplies the time by about 8 (12 of them:
days). The matcher must decide it at once, and the server must answer while a repository
full of such names is indexed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mimiverse.index.walker import walk

HOSTILE = "*a" * 12 + "*b"
NAME = "a" * 60


def _hostile_repo(root: Path, files: int) -> Path:
    root.mkdir(parents=True)
    (root / ".gitignore").write_text(f"{HOSTILE}\n")
    for i in range(files):
        sub = root / f"d{i % 10}"
        sub.mkdir(exist_ok=True)
        # Enough code that indexing lasts a while even on a fast, idle machine.
        body = "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n\n" for j in range(20))
        (sub / f"{NAME}{i}.py").write_text(body)
    (root / f"{NAME}b").write_text("ignored: it matches the pattern\n")
    return root


@pytest.mark.timeout(60)  # generous: linear matching takes milliseconds; backtracking, days
def test_a_backtracking_pattern_is_decided_without_backtracking(tmp_path: Path) -> None:
    root = _hostile_repo(tmp_path / "repo", 20)
    walked = walk(root)
    assert len([f for f in walked.files if f.path.endswith(".py")]) == 20
    assert walked.skipped["ignored"] == 1  # the one name that ends in b


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def hostile_server(tmp_path: Path) -> Iterator[str]:
    """`mimiverse serve --repo` on a hostile repository, in a process of its own (the test's
    client must not share the server's GIL)."""
    repo = _hostile_repo(tmp_path / "repo", 1500)
    config = tmp_path / "config.toml"
    # Embeddings go to a closed port: they fail at once; only the lexical run matters here.
    config.write_text(
        '[[backends]]\nname = "none"\nkind = "openai"\nurl = "http://127.0.0.1:9"\n'
        '[models.completion]\nmodel = "m"\nfamily = "qwen2.5-coder"\nbackends = ["none"]\n'
        '[models.chat]\nmodel = "m"\nbackends = ["none"]\n'
        '[models.embedding]\nmodel = "m"\nbackends = ["none"]\n'
        f'[index]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mimiverse.cli.main", "serve", "--config", str(config),
             "--port", str(port), "--repo", str(repo)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            stdout=subprocess.DEVNULL, stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=5) as client:
            for _ in range(600):
                try:
                    client.get(f"{url}/health/live")
                    break
                except httpx.TransportError:
                    if proc.poll() is not None:
                        raise RuntimeError(log.read_text()) from None
                    time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.timeout(120)
def test_the_server_answers_while_a_hostile_repository_indexes(
    hostile_server: str,
) -> None:
    url = hostile_server
    answered_while_indexing = 0
    # The limit is not a measurement: a frozen loop would hold the probe for days.
    with httpx.Client(timeout=30) as client:
        while True:
            assert client.get(f"{url}/health/live").json() == {"status": "ok"}
            status = client.get(f"{url}/api/codebase/status").json()
            if status["state"] != "indexing":
                break
            answered_while_indexing += 1
    assert status["state"] == "ready", status
    assert status["files"] == 1501  # and the .gitignore
    assert status["skipped"]["ignored"] == 1
    assert answered_while_indexing > 0, answered_while_indexing


@pytest.mark.timeout(60)  # generous: RE2 answers at once; a backtracking engine, not
def test_a_backtracking_search_glob_is_decided_without_backtracking() -> None:
    from mimiverse.index.store import compiled_glob

    pattern = compiled_glob("*a" * 12 + "*b")  # path_glob is the client's: hostile too
    assert pattern.search("src/" + "a" * 60 + ".py") is None
    assert pattern.search("src/" + "a" * 60 + "b") is not None
    assert compiled_glob("docs/ä €/*.md").search("docs/ä €/read me.md") is not None
