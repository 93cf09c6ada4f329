"""Traceback parsers and frame mapping, on real error output of each runtime."""

from __future__ import annotations

import pytest

from mimiverse.assist.frames import FileMap
from mimiverse.assist.tracebacks import Frame, parse_frames
from tests.assist.fixture import FILES, GO_TRACE, JAVA_TRACE, NODE_TRACE, PYTHON_TRACE, RUST_TRACE

PYLIB = "/root/.pyenv/versions/3.11.7/lib/python3.11/json/"
RUSTC = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/"

# (trace, every frame parsed innermost first, the frames mapped into the fixture repository)
CASES = {
    "python": (
        PYTHON_TRACE,
        [
            Frame("/srv/app/src/shop/cart.py", 18, "check_item", "python"),
            Frame(PYLIB + "decoder.py", 353, "raw_decode", "python"),
            Frame(PYLIB + "decoder.py", 337, "decode", "python"),
            Frame(PYLIB + "__init__.py", 359, "loads", "python"),
            Frame("/srv/app/src/shop/cart.py", 13, "load_and_total", "python"),
            Frame("/srv/app/src/main.py", 3, "<module>", "python"),
        ],
        [("src/shop/cart.py", 18), ("src/shop/cart.py", 13), ("src/main.py", 3)],
    ),
    "node": (
        NODE_TRACE,
        [
            Frame("/srv/app/web/cart.js", 2, "lineTotal", "javascript"),
            Frame("/srv/app/web/cart.js", 6, "cartTotal", "javascript"),
            Frame("/srv/app/web/main.js", 2, "Object.<anonymous>", "javascript"),
        ],
        [("web/cart.js", 2), ("web/cart.js", 6), ("web/main.js", 2)],
    ),
    "go": (
        GO_TRACE,
        [
            Frame("/srv/go/cmd/server/main.go", 12, "main.(*Cart).Total", "go"),
            Frame("/srv/go/cmd/server/main.go", 19, "main.main", "go"),
        ],
        [("cmd/server/main.go", 12), ("cmd/server/main.go", 19)],
    ),
    "rust": (
        RUST_TRACE,
        [
            # Named by the panic line first, then by the backtrace with its function.
            Frame("./src/main.rs", 2, "shop::line_total", "rust"),
            Frame(RUSTC + "std/src/panicking.rs", 689, "__rustc::rust_begin_unwind", "rust"),
            Frame(RUSTC + "core/src/panicking.rs", 80, "core::panicking::panic_fmt", "rust"),
        ],
        [("rust/shop/src/main.rs", 2), ("rust/shop/src/main.rs", 6),
         ("rust/shop/src/main.rs", 11)],
    ),
    "java": (
        JAVA_TRACE,
        [
            Frame("com/shop/Cart.java", 15, "com.shop.Cart.lambda$totalLength$0", "java"),
            Frame("java/util/ArrayList.java", 1511, "java.util.ArrayList.forEach", "java"),
            Frame("com/shop/Cart.java", 15, "com.shop.Cart.totalLength", "java"),
            Frame("com/shop/Main.java", 8, "com.shop.Main.main", "java"),
        ],
        [("src/main/java/com/shop/Cart.java", 15), ("src/main/java/com/shop/Cart.java", 15),
         ("src/main/java/com/shop/Main.java", 8)],
    ),
}


@pytest.mark.parametrize("language", list(CASES))
def test_frames_parsed_and_mapped(language: str) -> None:
    trace, expected, mapped = CASES[language]
    frames = parse_frames(trace)
    if language == "rust":
        assert frames[:3] == expected
        assert [f.function for f in frames if "main.rs" in f.path] == [
            "shop::line_total", "shop::cart_total::{{closure}}", "shop::cart_total",
            "shop::main"]
    else:
        assert frames == expected
    files = FileMap("/elsewhere/checkout", FILES)
    found = [(files.lookup(f.path), f.line) for f in frames]
    assert list(dict.fromkeys((p, n) for p, n in found if p is not None)) == \
        list(dict.fromkeys(mapped))


def test_mapping_rules() -> None:
    files = FileMap("/home/dev/shop", [*FILES, "a/util.py", "b/util.py"])
    cases = {
        # This very checkout, by its absolute path.
        "/home/dev/shop/src/shop/cart.py": "src/shop/cart.py",
        "/home/dev/shop/src/missing.py": None,
        # Container paths: the indexed path is a suffix of the frame's.
        "/app/src/shop/cart.py": "src/shop/cart.py",
        "C:\\build\\web\\cart.js": "web/cart.js",
        # Relative paths: the frame's path is a suffix of an indexed one.
        "./src/main.rs": "rust/shop/src/main.rs",
        "shop/Cart.java": "src/main/java/com/shop/Cart.java",
        # Only trailing folders in common (the standard library's json/decoder.py).
        "/usr/lib/python3.11/json/decoder.py": None,
        # Ambiguous (two util.py) and libraries, even when the name exists here.
        "util.py": None,
        "/app/a/util.py": "a/util.py",
        "/app/.venv/lib/python3.11/site-packages/src/shop/cart.py": None,
        "/app/node_modules/web/cart.js": None,
        "node:internal/modules/cjs/loader": None,
        "<frozen runpy>": None,
        "../outside/src/main.py": None,
    }
    assert {path: files.lookup(path) for path in cases} == cases


def test_typescript_and_esm_frames() -> None:
    # ts-node / source-mapped TypeScript, an ES module by file URL, and Node internals.
    trace = """TypeError: Cannot read properties of undefined (reading 'qty')
    at lineTotal (/app/src/cart.ts:12:21)
    at async checkout (file:///app/src/checkout.mjs:7:3)
    at /app/src/index.ts:3:1
    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)
"""
    assert parse_frames(trace) == [  # node:internal names no file: not a frame of code
        Frame("/app/src/cart.ts", 12, "lineTotal", "typescript"),
        Frame("/app/src/checkout.mjs", 7, "checkout", "javascript"),
        Frame("/app/src/index.ts", 3, None, "typescript"),
    ]
