"""Walking that cannot be tricked: names that are not UTF-8, and a file swapped for a
symlink while it is being read."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from mimiverse.config import IndexSettings
from mimiverse.index.indexer import Indexer
from mimiverse.index.store.sqlite import SqliteStore
from mimiverse.index.tokenize import tokens
from mimiverse.index.walker import SourceText, read_source, walk


def test_names_that_are_not_utf8_are_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    raw = os.fsencode(root)
    # Latin-1 bytes that are not UTF-8: one file and one directory (with a file inside).
    with open(raw + b"/caf\xe9.py", "wb") as fh:
        fh.write(b"def cafe():\n    return 1\n")
    os.mkdir(raw + b"/d\xff")
    with open(raw + b"/d\xff/inner.py", "wb") as fh:
        fh.write(b"x = 1\n")
    (root / "ok.py").write_text("def fine():\n    return 2\n")
    (root / "naïve.py").write_text("def naive():\n    return 3\n")  # real UTF-8: kept

    walked = walk(root)
    assert sorted(f.path for f in walked.files) == ["naïve.py", "ok.py"]
    assert walked.skipped["bad_name"] == 2

    store = SqliteStore(tmp_path / "index.db", tokenizer=tokens)
    report = Indexer(store, root, IndexSettings(), workers=0).run()
    store.close()
    assert report.files == 2 and report.skipped["bad_name"] == 2
    with sqlite3.connect(tmp_path / "index.db") as con:
        paths = sorted(p for (p,) in con.execute("SELECT DISTINCT path FROM chunks"))
    assert paths == ["naïve.py", "ok.py"]


def test_a_file_swapped_for_a_symlink_is_never_read_through_it(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("OUTSIDE-SECRET\n")
    target = root / "victim.py"
    target.write_text("inside = True\n")
    [victim] = walk(root).files
    link, plain = root / ".link.tmp", root / ".plain.tmp"
    os.symlink(outside, link)
    plain.write_text("inside = True\n")

    stop = threading.Event()

    def swap() -> None:
        # Atomic renames: the path is always either the regular file or the link.
        while not stop.is_set():
            os.replace(link, target)
            os.symlink(outside, link)
            os.replace(plain, target)
            plain.write_text("inside = True\n")

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes: dict[str, int] = {}
    try:
        for _ in range(3000):
            read = read_source(victim)
            if isinstance(read, SourceText):
                assert "OUTSIDE-SECRET" not in read.text
                outcomes["read"] = outcomes.get("read", 0) + 1
            else:
                outcomes[read] = outcomes.get(read, 0) + 1
    finally:
        stop.set()
        swapper.join()
    assert set(outcomes) <= {"read", "swapped", "unreadable"}, outcomes
    assert outcomes.get("read", 0) > 0  # the regular file was read when it was there
    # And without the race: the file is a symlink when it is opened.
    os.replace(link, target)
    assert read_source(victim) == "swapped"


def test_a_directory_swapped_for_a_symlink_is_never_read_through_it(tmp_path: Path) -> None:
    """O_NOFOLLOW guards the last component only; the descriptor check guards the rest."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("inside = True\n")
    [victim] = walk(root).files
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mod.py").write_text("OUTSIDE-SECRET\n")
    os.rename(root / "pkg", root / "pkg.orig")
    os.symlink(elsewhere, root / "pkg")
    assert read_source(victim) == "swapped"
