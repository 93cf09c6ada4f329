"""Code-aware tokens: the same split at index and at query time."""

from __future__ import annotations

import pytest

from mimiverse.index import tokenize
from mimiverse.index.tokenize import query_tokens, tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("getUserName", ["getusername", "get", "user", "name"]),
        ("GetUserName", ["getusername", "get", "user", "name"]),
        ("user_id", ["user_id", "user", "id"]),
        ("MAX_RETRY_COUNT", ["max_retry_count", "max", "retry", "count"]),
        ("HTTPServerError", ["httpservererror", "http", "server", "error"]),
        ("IOError", ["ioerror", "io", "error"]),
        ("parseHTML", ["parsehtml", "parse", "html"]),
        ("HTML5Parser", ["html5parser", "html", "parser"]),
        ("sha256sum", ["sha256sum", "sha", "256", "sum"]),
        ("src/index/walker.py", ["src", "index", "walker", "py"]),
        ("os.path.join", ["os", "path", "join"]),
        ("my-component", ["my", "component"]),
        ("std::vector<int>", ["std", "vector", "int"]),
        ("__init__", ["init"]),
        ("_private_helper", ["private_helper", "private", "helper"]),
        ("a = b + c", []),
        ("x += 1; i++", []),
        ("retry(3) or 404 or 10.5", ["retry", "or", "404", "or", "10"]),
        ("0xFF", ["0xff", "ff"]),
        ("v2", ["v2"]),
        ("café_au_lait", ["café_au_lait", "café", "au", "lait"]),
        ("ÜberClass", ["überclass"]),  # camelCase rules only for ASCII words
        ("!= && || => ...", []),
        ("", []),
        (
            "def read_source(file: SourceFile) -> str:",
            [
                "def", "read_source", "read", "source", "file", "sourcefile", "source",
                "file", "str",
            ],
        ),
    ],
)
def test_tokens(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


def test_repeats_are_kept_in_order() -> None:
    assert tokens("load(); load(); loadAll()") == ["load", "load", "loadall", "load", "all"]


def test_cache_gives_the_same_answer_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenize, "_CACHE_MAX", 4)
    monkeypatch.setattr(tokenize, "_CACHE", {})
    text = "alphaBeta gammaDelta epsilonZeta etaTheta iotaKappa alphaBeta"
    first = tokens(text)
    assert tokens(text) == first
    assert len(tokenize._CACHE) <= 4


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("how does the walker skip .gitignore files?", ["walker", "skip", "gitignore", "files"]),
        ("function that parses HTTPHeaders", ["parses", "httpheaders", "http", "headers"]),
        ("user_id user_id", ["user_id", "user", "id"]),
        ("where is the", ["where", "is", "the"]),  # nothing but stopwords: keep them
        ("?!", []),
    ],
)
def test_query_tokens(query: str, expected: list[str]) -> None:
    assert query_tokens(query) == expected


def test_index_and_query_agree() -> None:
    # A query for the identifier finds its parts, and the parts find the identifier.
    indexed = set(tokens("class HTTPServerError(Exception): ..."))
    assert set(query_tokens("HTTPServerError")) <= indexed
    assert set(query_tokens("http server error")) <= indexed


@pytest.mark.parametrize(
    "text",
    [
        "def parse_file(self, path: str) -> Tree:  # HTTPServer\n\tx_1 = y__z\x0b\x1c__",
        "".join(chr(c) for c in range(128)) * 2,
        "mixed ascii and ünïcode: getUserName über_class",
    ],
)
def test_ascii_fast_path_finds_the_regex_words(text: str) -> None:
    # ASCII text takes a byte-translation path; it must split exactly like the regex.
    expected: list[str] = []
    for word in tokenize._WORD.findall(text):
        expected.extend(tokenize._split(word))
    assert tokens(text) == expected


@pytest.mark.parametrize(
    "word",
    ["self", "Error", "HTTP", "aB", "Ab", "AB", "ab", "xY", "Xy", "X1", "_Ab", "Ab_", "a",
     "utf8", "getX", "ÜberClass", "über", "Über", "ÜBER", "snake_case", "__init__", "Τέστ"],
)
def test_one_part_shortcut_splits_like_the_regex(word: str) -> None:
    # Plain words skip the camelCase regex; what they give must not change.
    core = word.strip("_")
    expected: tuple[str, ...] = ()
    if len(core) >= 2:
        parts = (tokenize._PART.findall(core) if core.isascii()
                 else [p for p in core.split("_") if p])
        more = [p.lower() for p in parts if len(p) > 1] if len(parts) > 1 else []
        expected = (core.lower(), *more)
    assert tokenize._split(word) == expected
