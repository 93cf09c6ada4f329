"""Which indexed file a stack frame's path names.

A trace from a container, CI machine or another developer's laptop names files by paths
that do not exist here (`/app/src/shop/cart.py`), and Java names them by package
(`com/shop/Cart.java` for `src/main/java/com/shop/Cart.java`). Both are matched by the
longest run of trailing path components a frame shares with an indexed file; the match
must cover the whole of one of the two paths, so `decoder.py` of the standard library
never maps to the repository's own `json/decoder.py` by its name alone.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from pathlib import PurePosixPath

# Paths that name libraries and runtimes, never the repository's own code, even when a
# vendored copy inside the repository would share their trailing components.
_OUTSIDE_MARKERS = ("/site-packages/", "/dist-packages/", "/node_modules/", "/rustc/",
                    "/.cargo/registry/", "/go/pkg/mod/", "/usr/local/go/src/", "/usr/lib/go")
_OUTSIDE_PREFIXES = ("<", "node:", "internal/", "java.base/")


class FileMap:
    """The repository's indexed files, by their last component, for suffix matching."""

    def __init__(self, root: str, paths: Iterable[str]) -> None:
        self.root = PurePosixPath(root)
        self.paths = set(paths)
        self._by_name: defaultdict[str, list[tuple[str, ...]]] = defaultdict(list)
        for path in self.paths:
            parts = tuple(path.split("/"))
            self._by_name[parts[-1]].append(parts)

    def lookup(self, frame_path: str) -> str | None:
        """The indexed path (relative to the root) `frame_path` names, or None when it
        names a library, a file outside the repository, or more than one file equally."""
        path = frame_path.replace("\\", "/")
        if path.startswith(_OUTSIDE_PREFIXES) or any(m in path for m in _OUTSIDE_MARKERS):
            return None
        if path.startswith("/"):
            normal = PurePosixPath(posixpath.normpath(path))
            if normal.is_relative_to(self.root):  # this very checkout
                relative = normal.relative_to(self.root).as_posix()
                return relative if relative in self.paths else None
        parts = tuple(p for p in path.split("/") if p not in ("", "."))
        if not parts or ".." in parts:
            return None
        best: list[tuple[str, ...]] = []
        best_length = 0
        for candidate in self._by_name.get(parts[-1], []):
            shared = _shared_suffix(parts, candidate)
            if shared not in (len(parts), len(candidate)):
                continue  # they only share some trailing folders: different files
            if shared > best_length:
                best, best_length = [candidate], shared
            elif shared == best_length:
                best.append(candidate)
        if len(best) != 1:
            return None  # nothing, or ambiguous: guessing would show the wrong code
        return "/".join(best[0])


def _shared_suffix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n
