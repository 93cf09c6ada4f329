"""Every request field that names a path or a repository stays inside the allowed and
indexed roots: `..`, absolute paths elsewhere, symlinks pointing out, NUL bytes, `~` and
URL-encoded forms are refused with a clear 4xx, and nothing outside is read or indexed.

The layout: `allowed/` is the only allowed root and holds `repo/` (a real repository with
a symlinked file pointing out) and `escape` (a symlinked folder pointing out); `outside/`
holds a secret that must never show up anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.index.test_service import make_repo
from tests.security.conftest import Serve
from tests.servers.harness import ServerHandle

SECRET = "zebracornTopSecretValue"


@dataclass
class Layout:
    allowed: Path
    repo: Path
    outside: Path
    escape: Path


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.py").write_text(f"def leak():\n    return '{SECRET}'\n")
    repo = make_repo(allowed / "repo")
    (repo / "leak.py").symlink_to(outside / "secret.py")
    (repo / "leakdir").symlink_to(outside, target_is_directory=True)
    escape = allowed / "escape"
    escape.symlink_to(outside, target_is_directory=True)
    return Layout(allowed.resolve(), repo.resolve(), outside.resolve(), escape)


@pytest.fixture
def client(serve: Serve, layout: Layout) -> Iterator[httpx.Client]:
    app = serve(index={"allowed_roots": [str(layout.allowed)]})
    with httpx.Client(base_url=app.url, timeout=10, trust_env=False) as http:
        yield http


def error(r: httpx.Response) -> tuple[int, str, str]:
    body: dict[str, Any] = r.json()["error"]
    return r.status_code, body["type"], body["message"]


def nothing_indexed(http: httpx.Client, layout: Layout) -> None:
    r = http.get("/api/codebase/status")
    assert error(r)[:2] == (409, "not_ready")
    assert not (layout.outside / ".mimiverse").exists()


def index_repo(http: httpx.Client, layout: Layout) -> dict[str, Any]:
    assert http.post("/api/codebase/index", json={"path": str(layout.repo)}).status_code == 202
    deadline = time.monotonic() + 10  # a guard against hanging, not a timed assertion
    while True:
        status: dict[str, Any] = http.get("/api/codebase/status").json()
        if status["state"] != "indexing" or time.monotonic() > deadline:
            return status


def test_index_path_refuses_every_way_out(client: httpx.Client, layout: Layout) -> None:
    allowed, outside = str(layout.allowed), str(layout.outside)
    cases: list[tuple[str, int, str, str]] = [
        # `..`, resolved first, then checked against the allowed roots
        (f"{layout.repo}/../../outside", 403, "path_not_allowed", "outside the allowed roots"),
        (f"{allowed}/..", 403, "path_not_allowed", "outside the allowed roots"),
        ("../outside", 422, "invalid_request", "must be absolute"),
        # absolute paths elsewhere, and symlinks that point there
        (outside, 403, "path_not_allowed", "outside the allowed roots"),
        ("/", 403, "path_not_allowed", "outside the allowed roots"),
        (str(layout.escape), 403, "path_not_allowed", "outside the allowed roots"),
        (f"{layout.repo}/leakdir", 403, "path_not_allowed", "outside the allowed roots"),
        # NUL bytes: once a 500 (ValueError from the OS layer)
        (f"{layout.repo}\x00", 422, "invalid_request", "must not contain a NUL byte"),
        (f"{allowed}\x00/../outside", 422, "invalid_request", "must not contain a NUL byte"),
        # `~` is the server's home, not the client's: never expanded
        ("~", 422, "invalid_request", "`~` is not expanded"),
        ("~/", 422, "invalid_request", "`~` is not expanded"),
        ("~root", 422, "invalid_request", "`~` is not expanded"),
        # URL-encoded forms are names, never decoded: no such folder
        (f"{allowed}/%2e%2e/outside", 422, "invalid_request", "is not a directory"),
        (f"{allowed}/..%2foutside", 422, "invalid_request", "is not a directory"),
        ("%2Ftmp", 422, "invalid_request", "must be absolute"),
    ]
    for path, status, kind, message in cases:
        got = error(client.post("/api/codebase/index", json={"path": path}))
        assert got[:2] == (status, kind) and message in got[2], (path, got)
    # JSON escapes decode to the same `..` and are refused the same way.
    raw = b'{"path": "' + allowed.encode() + b'/\\u002e\\u002e/outside"}'
    r = client.post("/api/codebase/index", content=raw,
                    headers={"content-type": "application/json"})
    assert error(r)[:2] == (403, "path_not_allowed")
    nothing_indexed(client, layout)


def test_symlinks_inside_an_allowed_repository_are_not_followed_out(
    client: httpx.Client, layout: Layout
) -> None:
    status = index_repo(client, layout)
    # The four files of the repository; neither leak.py nor leakdir/ (both point out).
    assert (status["state"], status["files"], status["root"]) == ("ready", 4, str(layout.repo))
    r = client.post("/api/codebase/search", json={"query": SECRET, "mode": "lexical"})
    assert r.status_code == 200 and r.json()["results"] == []
    r = client.post("/api/codebase/search", json={"query": "leak", "mode": "lexical"})
    assert r.json()["results"] == []


def test_repo_fields_only_name_indexed_repositories(
    client: httpx.Client, layout: Layout
) -> None:
    index_repo(client, layout)
    assert client.get("/api/codebase/status", params={"repo": str(layout.repo)}
                      ).status_code == 200
    refused = [
        f"{layout.repo}/..", f"{layout.repo}/../../outside", str(layout.outside),
        str(layout.escape), f"{layout.repo}/leakdir", "../repo", "repo", "~", "~/repo",
        f"{layout.repo}\x00", f"{layout.repo}/%2e%2e",
    ]
    for repo in refused:
        got = error(client.get("/api/codebase/status", params={"repo": repo}))
        assert got[:2] == (404, "repo_not_indexed"), (repo, got)
        got = error(client.post("/api/codebase/search", json={"query": "cart", "repo": repo}))
        assert got[:2] == (404, "repo_not_indexed"), (repo, got)
    # Percent-encoded in the query string: decoded once by HTTP, then refused as above.
    for query in ("repo=..%2F..%2Foutside", "repo=%2e%2e", "repo=%00", "repo=%7E"):
        got = error(client.get(f"/api/codebase/status?{query}"))
        assert got[:2] == (404, "repo_not_indexed"), (query, got)
    nul = error(client.get("/api/codebase/status?repo=%00"))
    assert "must not contain a NUL byte" in nul[2]


def test_path_glob_cannot_climb_out(client: httpx.Client, layout: Layout) -> None:
    index_repo(client, layout)
    for glob in ("../*", "../../outside/*.py", "src/../../x", "..", "..\\..\\outside",
                 "~/*", "~root/*", "src/\x00.py"):
        got = error(client.post("/api/codebase/search",
                                json={"query": "cart", "path_glob": glob}))
        assert got[:2] == (422, "invalid_request") and got[2].startswith("path_glob:"), (
            glob, got)
    # A leading `/` anchors at the repository root, and URL-encoded dots are literal
    # names: both only filter what is indexed, and match nothing here.
    for glob in (f"{layout.outside}/*", "/etc/*", "%2e%2e/*", "**/secret.py"):
        r = client.post("/api/codebase/search",
                        json={"query": "leak", "path_glob": glob, "mode": "lexical"})
        assert r.status_code == 200 and r.json()["results"] == [], glob


def test_client_file_paths_in_completions_are_text_only(
    client: httpx.Client, layout: Layout, openai_server: ServerHandle
) -> None:
    """FIM `path` and Tabby's `filepath`s name the file in the prompt; nothing is read."""
    index_repo(client, layout)
    outside_file = str(layout.outside / "secret.py")
    for path in (outside_file, "../../outside/secret.py", f"{layout.repo}/leak.py", "~/x"):
        r = client.post("/api/ai/fim", json={"prefix": "def f():\n    ", "path": path})
        assert r.status_code == 200, path
        prompt = openai_server.behaviour.last_request["/v1/completions"]["prompt"]
        assert SECRET not in prompt
    r = client.post("/v1/completions", json={
        "language": "python",
        "segments": {"prefix": "x = ", "filepath": "../../outside/secret.py",
                     "relevant_snippets_from_changed_files": [
                         {"filepath": outside_file, "body": "y = 1"}]},
    })
    assert r.status_code == 200
    assert SECRET not in openai_server.behaviour.last_request["/v1/completions"]["prompt"]
