"""`mimiverse index`, `search` and `eval search` from the command line."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mimiverse.cli.main import app
from mimiverse.config import IndexSettings, load_settings
from mimiverse.index.store import sqlite_path
from tests.cli.test_cli import write_config
from tests.index.test_service import make_repo
from tests.servers.harness import ServerHandle
from tests.support.app_server import serve_app, settings_for

runner = CliRunner()


def test_index_then_search(tmp_path: Path, openai_server: ServerHandle) -> None:
    config = write_config(tmp_path, openai_server.url, kind="openai")
    root = make_repo(tmp_path / "repo")
    result = runner.invoke(app, ["index", str(root), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "4 files, 10 chunks (4 indexed, 0 unchanged, 0 removed) in " in result.stdout
    assert openai_server.behaviour.requests["/v1/embeddings"] >= 1
    # Not a terminal: progress comes as plain lines, and the time counts the embeddings.
    assert "indexing files: 4/4" in result.stdout
    assert "embedding chunks: 10/10" in result.stdout
    assert re.search(r"in \d+\.\d\d s \(lexical \d+\.\d\d s, embeddings \d+\.\d\d s\)",
                     result.stdout)

    again = runner.invoke(app, ["index", str(root), "--config", str(config)])
    assert "(0 indexed, 4 unchanged, 0 removed)" in again.stdout

    result = runner.invoke(app, ["search", "hash password", "--repo", str(root), "--json",
                                 "--config", str(config), "--mode", "lexical"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    top = found["results"][0]
    assert (top["path"], top["symbol"], top["start_line"]) == ("src/auth/login.py",
                                                               "hash_password", 1)
    table = runner.invoke(app, ["search", "add to cart", "--repo", str(root), "--limit", "2",
                                "--config", str(config), "--local"])
    assert table.exit_code == 0
    # 80 columns (not a terminal): the location and the score are whole, on one line.
    line = next(ln for ln in table.stdout.splitlines() if "web/cart.js:1-5" in ln)
    assert "addToCart" in line and re.search(r"\b\d+\.\d{4}\b", line)
    assert all(len(ln) <= 80 for ln in table.stdout.splitlines())


def test_search_unindexed_repo_says_how(tmp_path: Path, openai_server: ServerHandle) -> None:
    config = write_config(tmp_path, openai_server.url, kind="openai")
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["search", "x", "--repo", str(tmp_path / "empty"),
                                 "--config", str(config)])
    assert result.exit_code == 1
    assert "is not indexed yet: run `mimiverse index" in result.stderr


def test_eval_search_scores_each_mode(tmp_path: Path, openai_server: ServerHandle) -> None:
    config = write_config(tmp_path, openai_server.url, kind="openai")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "geometry.py").write_text('''
def circle_area(radius):
    """Compute the area of a circle from its radius."""
    return 3.14159 * radius * radius


def rectangle_perimeter(width, height):
    """Return the perimeter of a rectangle given width and height."""
    return 2 * (width + height)
''')
    cache = tmp_path / "embeddings.npz"
    args = ["eval", "search", str(pkg), "--json", "--config", str(config),
            "--embed-cache", str(cache)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries"] == 6 and report["chunks"] == 2
    kinds = report["kinds"]
    assert {k: v["queries"] for k, v in kinds.items()} == {
        "docstring": 2, "identifier": 2, "phrase": 2}
    assert set(kinds["docstring"]["rankers"]) == {"bm25", "dense", "lexical", "vector", "hybrid"}
    perfect = {"mrr@10": 1.0, "recall@1": 1.0, "recall@10": 1.0}
    assert kinds["docstring"]["rankers"]["lexical"] == perfect
    assert kinds["identifier"]["rankers"]["lexical"] == perfect
    assert kinds["phrase"]["rankers"]["bm25"] == perfect

    asked = openai_server.behaviour.requests["/v1/embeddings"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == report
    assert openai_server.behaviour.requests["/v1/embeddings"] == asked  # all from the cache


def test_eval_search_leaves_ignored_folders_and_no_copy_behind(
    tmp_path: Path, openai_server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, openai_server.url, kind="openai")
    pkg = tmp_path / "pkg"
    (pkg / "venv-x" / "lib").mkdir(parents=True)
    (pkg / ".gitignore").write_text("venv-x/\n")
    (pkg / "shapes.py").write_text('''
def square_area(side):
    """Compute the area of a square from its side."""
    return side * side
''')
    (pkg / "venv-x" / "lib" / "vendored.py").write_text('''
def vendored_helper(x):
    """A helper that lives in an ignored virtualenv."""
    return x
''')
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = runner.invoke(app, ["eval", "search", str(pkg), "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    kinds = json.loads(result.stdout)["kinds"]
    assert kinds["docstring"]["queries"] == 1  # the ignored folder gave none
    assert list(scratch.iterdir()) == []  # the docstring-free copy is gone


def test_search_asks_the_running_server_when_it_has_the_repository(
    tmp_path: Path, openai_server: ServerHandle
) -> None:
    root = make_repo(tmp_path / "repo")
    settings = settings_for(("up", "openai", openai_server.url),
                            index={"data_dir": str(tmp_path / "server-data")})
    server = serve_app(settings, repos=[str(root)])
    try:
        port = server.url.rsplit(":", 1)[1]
        config = write_config(tmp_path, openai_server.url, kind="openai",
                              extra=f"[server]\nport = {port}\n")
        for _ in range(500):  # the server indexes the repository in the background
            status = httpx.get(f"{server.url}/api/codebase/status", params={"repo": str(root)})
            if status.status_code == 200 and status.json()["state"] == "ready":
                break
            time.sleep(0.02)
        found = runner.invoke(app, ["search", "hash password", "--repo", str(root),
                                    "--json", "--mode", "lexical", "--config", str(config)])
        assert found.exit_code == 0, found.output
        answer = json.loads(found.stdout)
        assert answer["answered_by"] == "the running server"
        assert answer["results"][0]["symbol"] == "hash_password"
        # Never searched here: the CLI's own index of the repository was never created.
        assert not sqlite_path(load_settings(config).index, root).exists()
    finally:
        server.stop()


def _files_indexed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as conn:
            return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet, or mid-migration


def test_killed_index_run_leaves_a_consistent_index_the_next_run_completes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "big"
    for i in range(1500):
        d = root / f"pkg{i % 30}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i}.py").write_text(
            "".join(f"def function_{i}_{j}(x):\n    return x * {j}\n\n\n" for j in range(12))
        )
    env = dict(os.environ)
    db = sqlite_path(IndexSettings(), root.resolve())  # under the tests' XDG_DATA_HOME
    partial = []
    # Kill each run once it has committed more files than the last: mid-run, by design.
    for target in (100, 600, 1100):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mimiverse.cli.main", "index", str(root), "--no-embed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + 60
        while _files_indexed(db) < target and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if db.exists():
            with sqlite3.connect(db) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                # every file the index lists is complete: all 12 functions in its chunks
                rows = conn.execute(
                    "SELECT f.path, group_concat(c.text, '') FROM files f "
                    "LEFT JOIN chunks c ON c.repo = f.repo AND c.path = f.path GROUP BY f.path"
                ).fetchall()
                partial.append(len(rows))
                for path, text in rows:
                    i = path.rsplit("mod", 1)[1].removesuffix(".py")
                    assert f"function_{i}_0(" in text and f"function_{i}_11(" in text, path
    # the kills landed mid-run: some files were committed, not all
    assert any(0 < n < 1500 for n in partial), partial
    result = runner.invoke(app, ["index", str(root), "--no-embed"], env=env)
    assert result.exit_code == 0, result.output
    assert "1500 files" in result.stdout
    with sqlite3.connect(db) as conn:
        symbols = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert symbols >= 1500


def test_watch_keeps_the_index_current(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    db = sqlite_path(IndexSettings(), root.resolve())  # under the tests' XDG_DATA_HOME
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimiverse.cli.main", "index", str(root), "--watch",
         "--no-embed"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def symbols() -> set[str]:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5) as conn:
                return {s for (s,) in conn.execute("SELECT symbol FROM chunks") if s}
        except sqlite3.Error:
            return set()

    def wait_for(predicate: object, what: str) -> None:
        deadline = time.monotonic() + 20
        while not predicate():  # type: ignore[operator]
            assert proc.poll() is None, "the watcher exited"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    try:
        wait_for(lambda: "addToCart" in symbols(), "the first index")
        (root / "web" / "checkout.js").write_text(
            "export function applyDiscount(cart, percent) {\n"
            "  cart.total = cart.total * (1 - percent / 100);\n  return cart;\n}\n")
        (root / "web" / "cart.js").unlink()
        wait_for(lambda: "applyDiscount" in symbols() and "addToCart" not in symbols(),
                 "the change to be indexed")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


SERVER_TOKEN = "server-token-0123456789"
CLI_TOKEN = "wrong-token-9876543210"


def _search_against(tmp_path: Path, server_url: str, backend_url: str, *args: str,
                    cli_auth: str = "") -> tuple[int, str, str, Path]:
    """Run `search` with a configuration pointing at the server; (exit, stdout, stderr
    with its lines joined, the repository)."""
    root = tmp_path / "repo"
    port = server_url.rsplit(":", 1)[1]
    config = write_config(tmp_path, backend_url, kind="openai",
                          extra=f"[server]\nport = {port}\n{cli_auth}")
    result = runner.invoke(app, ["search", "hash password", "--repo", str(root), "--json",
                                 "--mode", "lexical", "--config", str(config), *args])
    return result.exit_code, result.stdout, " ".join(result.stderr.split()), config


def test_search_with_a_refused_token_says_so_and_never_searches_here(
    tmp_path: Path, openai_server: ServerHandle
) -> None:
    root = make_repo(tmp_path / "repo")
    settings = settings_for(("up", "openai", openai_server.url),
                            auth={"tokens": [SERVER_TOKEN]},
                            index={"data_dir": str(tmp_path / "server-data")})
    server = serve_app(settings, repos=[str(root)])
    try:
        code, out, err, config = _search_against(
            tmp_path, server.url, openai_server.url,
            cli_auth=f'[auth]\ntokens = ["{CLI_TOKEN}"]\n')
        assert code == 1 and out == ""
        assert (f"error: {server.url}/api/codebase/search refused the API token (401 "
                "unauthorized); token sent: the first of [auth] tokens in this command's "
                "configuration") in err
        assert CLI_TOKEN not in err and CLI_TOKEN[:8] not in err
        # Never searched here instead: the CLI's own index of the repository was not made.
        assert not sqlite_path(load_settings(config).index, root).exists()

        code, _, err, _ = _search_against(tmp_path, server.url, openai_server.url)
        assert code == 1
        assert ("refused the API token (401 unauthorized); token sent: none: this command's "
                "configuration has no [auth] tokens") in err
    finally:
        server.stop()


def test_search_refused_by_the_server_prints_its_error(
    tmp_path: Path, openai_server: ServerHandle
) -> None:
    root = make_repo(tmp_path / "repo")
    settings = settings_for(("up", "openai", openai_server.url),
                            index={"data_dir": str(tmp_path / "server-data")})
    server = serve_app(settings, repos=[str(root)])
    try:
        code, out, err, config = _search_against(tmp_path, server.url, openai_server.url,
                                                 "--glob", "../secrets/*")
        assert code == 1 and out == ""
        assert f"error: {server.url}/api/codebase/search answered 422 " in err
        assert ("invalid_request: path_glob: Value error, must stay inside the repository "
                "(no `..` or `~`)") in err
        assert not sqlite_path(load_settings(config).index, root).exists()
    finally:
        server.stop()


def test_search_runs_here_when_the_server_has_not_indexed_the_repository(
    tmp_path: Path, openai_server: ServerHandle
) -> None:
    make_repo(tmp_path / "repo")
    settings = settings_for(("up", "openai", openai_server.url),
                            index={"data_dir": str(tmp_path / "server-data")})
    server = serve_app(settings)  # serves, but knows no repository
    try:
        code, out, err, config = _search_against(tmp_path, server.url, openai_server.url)
        assert code == 1 and "is not indexed yet: run `mimiverse index" in err
        indexed = runner.invoke(app, ["index", str(tmp_path / "repo"), "--no-embed",
                                      "--config", str(config)])
        assert indexed.exit_code == 0, indexed.output
        code, out, err, _ = _search_against(tmp_path, server.url, openai_server.url)
        assert code == 0, err
        answer = json.loads(out)
        assert answer["answered_by"] == "this process"
        assert answer["results"][0]["symbol"] == "hash_password"
    finally:
        server.stop()


def test_search_against_another_program_on_the_port_is_an_error(
    tmp_path: Path, openai_server: ServerHandle
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b"<html>internal error: secret-looking upstream text</html>"
            self.send_response(500)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_address[1]}"
        make_repo(tmp_path / "repo")
        code, _, err, _ = _search_against(tmp_path, url, openai_server.url)
        assert code == 1
        assert (f"{url}/api/codebase/search answered 500 Internal Server Error, not in "
                "Mimiverse's error shape: is another program listening on port") in err
        assert "secret-looking" not in err  # a foreign body is never echoed
    finally:
        other.shutdown()
        other.server_close()
