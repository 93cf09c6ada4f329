"""Stack frames out of error output: Python, Node (JavaScript/TypeScript), Go, Rust, Java.

Each parser reads the lines its runtime prints and yields frames innermost first (where
the error happened first), whatever order the runtime prints them in. Frames are only
parsed here; which of them belong to an indexed repository is decided by `map_frames`
(assist/frames.py), which knows the repository's files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Frame:
    path: str  # as printed (absolute, relative, or derived from a Java package)
    line: int
    function: str | None
    language: str


# Python: `  File "/app/src/cart.py", line 18, in check_item`, outermost first.
_PYTHON = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<fn>.+))?$')
# Node: `    at fn (/app/x.js:2:21)`, `    at /app/x.js:2:21`, `    at file:///app/x.mjs:3:7`.
_NODE_CALL = re.compile(r"^\s*at (?:async )?(?P<fn>.+?) \((?P<loc>.+)\)$")
_NODE_BARE = re.compile(r"^\s*at (?:async )?(?P<loc>\S+)$")
_NODE_LOC = re.compile(r"^(?P<path>.+?):(?P<line>\d+)(?::\d+)?$")
_JS_SUFFIXES = (".js", ".mjs", ".cjs", ".jsx")
_TS_SUFFIXES = (".ts", ".tsx", ".mts", ".cts")
# Go: a function line `main.total(...)` followed by `\t/app/main.go:12 +0x1d`.
_GO_FUNC = re.compile(r"^(?:created by )?(?P<fn>\S+?)(?:\([^()]*\))?(?: in goroutine \d+)?$")
_GO_LOC = re.compile(r"^\t(?P<path>\S+\.go):(?P<line>\d+)(?: \+0x[0-9a-f]+)?$")
# Rust: `   3: shop::line_total` then `             at ./src/main.rs:2:5`; the panic line
# `thread 'main' panicked at src/main.rs:2:5:` (older: `panicked at 'msg', src/main.rs:2:5`).
_RUST_FUNC = re.compile(r"^\s*\d+: (?P<fn>.+)$")
_RUST_LOC = re.compile(r"^\s+at (?P<path>.+?\.rs):(?P<line>\d+)(?::\d+)?$")
_RUST_PANIC = re.compile(r"panicked at (?:'.*', )?(?P<path>[^\s:]+\.rs):(?P<line>\d+)(?::\d+)?")
# Java: `\tat com.shop.Cart.total(Cart.java:15)`, optionally `java.base/` before the class.
_JAVA = re.compile(
    r"^\s*at (?:[\w.$-]+/)?(?P<cls>[\w.$]+)\.(?P<method>[\w$<>]+)"
    r"\((?P<file>[\w$.-]+\.(?:java|kt|scala|groovy)):(?P<line>\d+)\)$"
)


def parse_python(lines: list[str]) -> list[Frame]:
    frames = []
    for text in lines:
        m = _PYTHON.match(text)
        if m:
            frames.append(Frame(m["path"], int(m["line"]), m["fn"], "python"))
    return frames[::-1]  # printed outermost first


def parse_node(lines: list[str]) -> list[Frame]:
    frames = []
    for text in lines:
        m = _NODE_CALL.match(text)
        function, location = (m["fn"], m["loc"]) if m else (None, None)
        if m is None:
            bare = _NODE_BARE.match(text)
            if bare is None:
                continue
            location = bare["loc"]
        assert location is not None
        loc = _NODE_LOC.match(location.removeprefix("file://"))
        if loc is None:
            continue  # `at Array.map (<anonymous>)`, `(index 0)`: no file
        path = loc["path"]
        if not path.endswith(_JS_SUFFIXES + _TS_SUFFIXES):
            continue  # another runtime's `at` line (Rust prints `at ./src/main.rs:2:5`)
        language = "typescript" if path.endswith(_TS_SUFFIXES) else "javascript"
        frames.append(Frame(path, int(loc["line"]), function, language))
    return frames


def parse_go(lines: list[str]) -> list[Frame]:
    frames = []
    function: str | None = None
    for text in lines:
        loc = _GO_LOC.match(text)
        if loc is not None:
            frames.append(Frame(loc["path"], int(loc["line"]), function, "go"))
            function = None
            continue
        m = _GO_FUNC.match(text)
        function = m["fn"] if m and not text.startswith(("goroutine ", "panic:")) else None
    return frames


def parse_rust(lines: list[str]) -> list[Frame]:
    frames: list[Frame] = []
    function: str | None = None
    panic: int | None = None  # index of the frame the panic line named
    for text in lines:
        where = _RUST_PANIC.search(text)
        if where is not None and panic is None:
            panic = len(frames)
            frames.append(Frame(where["path"], int(where["line"]), None, "rust"))
            continue
        loc = _RUST_LOC.match(text)
        if loc is not None:
            frame = Frame(loc["path"], int(loc["line"]), function, "rust")
            # The backtrace names the panic's place again, with its function: one frame.
            if panic is not None and frames[panic].function is None \
                    and _same_place(frames[panic], frame):
                frames[panic] = frame
            else:
                frames.append(frame)
            continue
        m = _RUST_FUNC.match(text)
        function = m["fn"] if m else None
    return frames


def _same_place(a: Frame, b: Frame) -> bool:
    return a.line == b.line and a.path.removeprefix("./") == b.path.removeprefix("./")


def parse_java(lines: list[str]) -> list[Frame]:
    frames = []
    for text in lines:
        m = _JAVA.match(text)
        if m is None:
            continue
        # The source file lives in the folder of its package: com.shop.Cart -> com/shop/.
        package = m["cls"].split("$", 1)[0].split(".")[:-1]
        path = "/".join([*package, m["file"]])
        language = "java" if m["file"].endswith(".java") else m["file"].rsplit(".", 1)[1]
        frames.append(Frame(path, int(m["line"]), f"{m['cls']}.{m['method']}", language))
    return frames


PARSERS: dict[str, Callable[[list[str]], list[Frame]]] = {
    "python": parse_python, "node": parse_node, "go": parse_go, "rust": parse_rust,
    "java": parse_java,
}


def parse_frames(error_output: str) -> list[Frame]:
    """Every frame the error output shows, innermost first within each trace; output
    that mixes runtimes (a Python tool calling Node) gives each runtime's frames."""
    lines = error_output.replace("\r\n", "\n").split("\n")
    found: list[Frame] = []
    for parse in PARSERS.values():
        found.extend(parse(lines))
    return list(dict.fromkeys(found))
