"""`mimiverse index`, `search` and `eval search` from the command line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from mimiverse.cli.main import app
from mimiverse.config import IndexSettings
from mimiverse.index.store import sqlite_path
from tests.cli.test_cli import write_config
from tests.index.test_service import make_repo
from tests.servers.harness import ServerHandle

runner = CliRunner()


def test_index_then_search(tmp_path: Path, openai_server: ServerHandle) -> None:
    config = write_config(tmp_path, openai_server.url, kind="openai")
    root = make_repo(tmp_path / "repo")
    result = runner.invoke(app, ["index", str(root), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "4 files, 10 chunks (4 indexed, 0 unchanged, 0 removed)" in result.stdout
    assert openai_server.behaviour.requests["/v1/embeddings"] >= 1

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
                                "--config", str(config)])
    assert table.exit_code == 0
    assert "web/cart.js:1-5" in table.stdout and "addToCart" in table.stdout


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
