"""Syntax-aware chunking: exact ranges per language, coverage, splitting and merging."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from mimiverse.index.chunker import chunk_file, syntax_languages
from mimiverse.index.model import Chunk

PYTHON = '''\
"""A module."""

import os
import sys

LIMIT = 10


def small(x):
    return x + 1


@cache
def load(path: str) -> str:
    # read it
    with open(path) as fh:
        return fh.read()


class Store:
    """Keeps things."""

    kind = "store"

    def __init__(self, root):
        self.root = root
        self.items = {}
        self.count = 0

    def get(self, key):
        value = self.items.get(key)
        if value is None:
            raise KeyError(key)
        return value


if __name__ == "__main__":
    print(load(sys.argv[1]))
'''

JAVASCRIPT = """\
const path = require("path");

function join(a, b) {
  const p = path.join(a, b);
  return p;
}

class Queue {
  constructor() {
    this.items = [];
    this.size = 0;
  }
  push(x) {
    this.items.push(x);
    this.size += 1;
  }
}

module.exports = { join, Queue };
"""

TYPESCRIPT = """\
import { readFile } from "fs";

/** Adds one. */
export function addOne(x: number): number {
  const y = x + 1;
  return y;
}

export const double = (x: number): number => {
  const y = x * 2;
  return y;
};

export interface Shape {
  area(): number;
  name: string;
  sides: number;
}

export class Circle implements Shape {
  name = "circle";
  sides = 0;
  constructor(private r: number) {
    super();
    this.r = r;
  }
  area(): number {
    const r2 = this.r * this.r;
    return Math.PI * r2;
  }
}
"""

TSX = """\
import React from "react";

type Props = { name: string };

export function Hello({ name }: Props) {
  const text = `Hello ${name}`;
  return <div className="hello">{text}</div>;
}

export default class Panel extends React.Component<Props> {
  render() {
    return (
      <section>
        <Hello name={this.props.name} />
      </section>
    );
  }
}
"""

GO = """\
package store

import (
    "errors"
    "fmt"
)

// ErrMissing is returned for unknown keys.
var ErrMissing = errors.New("missing")

// Store keeps values.
type Store struct {
    items map[string]string
    count int
}

// Get returns the value for key.
func (s *Store) Get(key string) (string, error) {
    v, ok := s.items[key]
    if !ok {
        return "", fmt.Errorf("%w: %s", ErrMissing, key)
    }
    return v, nil
}

func New() *Store {
    return &Store{
        items: map[string]string{},
    }
}
"""

RUST = """\
use std::collections::HashMap;

/// A store of values.
#[derive(Debug, Default)]
pub struct Store {
    items: HashMap<String, String>,
    count: usize,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        let v = self.items.get(key);
        v
    }
}

fn helper(x: i32) -> i32 {
    let y = x + 1;
    y * 2
}
"""

JAVA = """\
package store;

import java.util.HashMap;
import java.util.Map;

/** Keeps values. */
public class Store {
    private final Map<String, String> items = new HashMap<>();

    public Store() {
        super();
        items.clear();
    }

    @Override
    public String toString() {
        String s = items.toString();
        return "Store" + s;
    }
}
"""

C = """\
#include <stdio.h>
#include <stdlib.h>

#define MAX 10

struct point {
    int x;
    int y;
};

/* Adds two points. */
static struct point add(struct point a, struct point b) {
    struct point r = {a.x + b.x, a.y + b.y};
    return r;
}

int main(void) {
    struct point p = add((struct point){1, 2}, (struct point){3, 4});
    printf("%d\\n", p.x);
    return 0;
}
"""

CPP = """\
#include <string>

namespace shapes {

class Circle {
 public:
  explicit Circle(double r) : r_(r) {
    check();
    init();
  }
  double area() const {
    double a = 3.14 * r_ * r_;
    return a;
  }
 private:
  double r_;
};

}  // namespace shapes

double shapes::Circle::check() {
  int unused = 0;
  return r_;
}
"""

BROKEN_PYTHON = """\
import os

def good(a):
    x = a + 1
    y = x * 2
    return y

def broken(a:
    return a +

class Fine:
    def m(self):
        one = 1
        two = 2
        return one + two
"""

SOURCES: dict[str, tuple[str, str]] = {
    "python": ("store.py", PYTHON),
    "javascript": ("queue.js", JAVASCRIPT),
    "typescript": ("shapes.ts", TYPESCRIPT),
    "tsx": ("hello.tsx", TSX),
    "go": ("store.go", GO),
    "rust": ("store.rs", RUST),
    "java": ("Store.java", JAVA),
    "c": ("point.c", C),
    "cpp": ("circle.cpp", CPP),
}

Row = tuple[str | None, str, int, int]

# Default limits: definitions of 4+ lines are chunks of their own, small classes whole.
# Every function and method with a body is a chunk of its own; a class keeps its header.
DEFAULT: dict[str, list[Row]] = {
    "python": [
        ("small", "function", 1, 10),  # docstring, imports, constant and a tiny function
        ("load", "function", 13, 17),  # decorator and leading comment included
        ("Store", "class", 20, 23),  # header, docstring and class attribute
        ("Store.__init__", "method", 25, 28),
        ("Store.get", "method", 30, 34),
        (None, "block", 37, 38),
    ],
    "javascript": [
        ("join", "function", 1, 6),
        ("Queue", "class", 8, 8),
        ("Queue.constructor", "method", 9, 12),
        ("Queue.push", "method", 13, 17),
        (None, "block", 19, 19),
    ],
    "typescript": [
        ("addOne", "function", 1, 7),
        ("double", "function", 9, 12),
        ("Shape", "class", 14, 18),  # an interface of one-line signatures stays whole
        ("Circle", "class", 20, 22),
        ("Circle.constructor", "method", 23, 26),
        ("Circle.area", "method", 27, 31),
    ],
    "tsx": [
        ("Hello", "function", 1, 8),
        ("Panel", "class", 10, 10),
        ("Panel.render", "method", 11, 18),
    ],
    "go": [
        (None, "block", 1, 9),
        ("Store", "class", 11, 15),
        ("Store.Get", "method", 17, 24),
        ("New", "function", 26, 30),
    ],
    "rust": [
        ("Store", "class", 1, 8),  # doc comment and #[derive] stay with the struct
        ("Store", "class", 10, 10),  # the impl block's header
        ("Store.new", "method", 11, 13),
        ("Store.get", "method", 15, 19),
        ("helper", "function", 21, 24),
    ],
    "java": [
        ("Store", "class", 1, 8),  # the imports before it read as its preamble
        ("Store.Store", "method", 10, 13),
        ("Store.toString", "method", 15, 20),
    ],
    "c": [
        (None, "block", 1, 4),
        ("point", "class", 6, 9),
        ("add", "function", 11, 15),
        ("main", "function", 17, 21),
    ],
    "cpp": [
        ("shapes.Circle", "class", 1, 6),
        ("shapes.Circle.Circle", "method", 7, 10),
        ("shapes.Circle.area", "method", 11, 14),
        ("shapes.Circle", "block", 15, 19),
        ("shapes.Circle.check", "method", 21, 24),
    ],
}

# max_chunk_lines=8: classes no longer fit and split into header and methods.
SPLIT: dict[str, list[Row]] = {
    "python": [
        (None, "block", 1, 6),
        ("small", "function", 9, 10),
        ("load", "function", 13, 17),
        ("Store", "class", 20, 23),  # header, docstring and class attribute
        ("Store.__init__", "method", 25, 28),
        ("Store.get", "method", 30, 34),
        (None, "block", 37, 38),
    ],
    "javascript": [
        ("join", "function", 1, 6),
        ("Queue", "class", 8, 8),
        ("Queue.constructor", "method", 9, 12),
        ("Queue.push", "method", 13, 17),
        (None, "block", 19, 19),
    ],
    "typescript": [
        ("addOne", "function", 1, 7),
        ("double", "function", 9, 12),
        ("Shape", "class", 14, 18),
        ("Circle", "class", 20, 22),
        ("Circle.constructor", "method", 23, 26),
        ("Circle.area", "method", 27, 31),
    ],
    "tsx": [
        ("Hello", "function", 1, 8),
        ("Panel", "class", 10, 10),
        ("Panel.render", "method", 11, 18),
    ],
    "java": [
        ("Store", "class", 1, 8),
        ("Store.Store", "method", 10, 13),
        ("Store.toString", "method", 15, 20),
    ],
    "rust": [
        ("Store", "class", 1, 8),
        ("Store", "class", 10, 10),
        ("Store.new", "method", 11, 13),
        ("Store.get", "method", 15, 19),
        ("helper", "function", 21, 24),
    ],
    "cpp": [
        ("shapes.Circle", "class", 1, 6),
        ("shapes.Circle.Circle", "method", 7, 10),
        ("shapes.Circle.area", "method", 11, 14),
        ("shapes.Circle", "block", 15, 19),
        ("shapes.Circle.check", "method", 21, 24),
    ],
}


def rows(chunks: list[Chunk]) -> list[Row]:
    return [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks]


def assert_well_formed(chunks: list[Chunk], path: str, text: str, max_lines: int) -> None:
    """Every non-blank line is in a chunk; texts are the lines; limits hold; in order."""
    lines = text.split("\n")
    covered: set[int] = set()
    previous_start = 0
    for chunk in chunks:
        assert chunk.path == path
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)
        assert chunk.start_line >= previous_start
        previous_start = chunk.start_line
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.end_line - chunk.start_line + 1 <= max_lines
        assert chunk.text.strip()
        assert chunk.kind in {"function", "method", "class", "block", "window"}
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    needed = {n for n, line in enumerate(lines, start=1) if line.strip()}
    assert needed <= covered, f"uncovered lines: {sorted(needed - covered)}"


@pytest.mark.parametrize("language", sorted(DEFAULT))
def test_default_limits(language: str) -> None:
    path, text = SOURCES[language]
    chunks = chunk_file(path, text, language)
    assert rows(chunks) == DEFAULT[language]
    assert {c.language for c in chunks} == {language}


@pytest.mark.parametrize("language", sorted(SPLIT))
def test_large_classes_split_into_header_and_methods(language: str) -> None:
    path, text = SOURCES[language]
    assert rows(chunk_file(path, text, language, max_chunk_lines=8)) == SPLIT[language]


def test_syntax_languages() -> None:
    assert set(SOURCES) <= syntax_languages()


@pytest.mark.parametrize("language", sorted(SOURCES))
@pytest.mark.parametrize(
    ("max_lines", "max_chars", "min_lines"),
    [(80, 3000, 4), (8, 3000, 4), (3, 3000, 1), (5, 80, 2), (1, 3000, 1), (40, 50, 4)],
)
def test_every_nonblank_line_is_covered(
    language: str, max_lines: int, max_chars: int, min_lines: int
) -> None:
    path, text = SOURCES[language]
    chunks = chunk_file(
        path, text, language,
        max_chunk_lines=max_lines, max_chunk_chars=max_chars, min_chunk_lines=min_lines,
    )
    assert_well_formed(chunks, path, text, max_lines)
    for chunk in chunks:
        if chunk.start_line != chunk.end_line:  # a single line may be longer than the limit
            assert len(chunk.text) <= max_chars


def test_large_function_is_split_into_windows() -> None:
    body = "".join(f"    total += {i}\n" for i in range(200))
    text = f"def big(total):\n{body}    return total\n"
    chunks = chunk_file("big.py", text, "python")
    assert rows(chunks) == [
        ("big", "function", 1, 80),
        ("big", "function", 78, 157),  # three lines of overlap keep the context
        ("big", "function", 155, 202),
    ]
    assert_well_formed(chunks, "big.py", text, 80)


def test_windows_also_respect_the_character_limit() -> None:
    body = "".join(f"    value_{i} = compute_something_long({i})\n" for i in range(50))
    text = f"def wide():\n{body}"
    chunks = chunk_file("wide.py", text, "python", max_chunk_chars=500)
    assert all(len(c.text) <= 500 for c in chunks)
    assert {(c.symbol, c.kind) for c in chunks} == {("wide", "function")}
    assert_well_formed(chunks, "wide.py", text, 80)


def test_method_too_large_for_its_class_is_windowed_as_a_method() -> None:
    body = "".join(f"        self.v{i} = {i}\n" for i in range(20))
    text = f"class Big:\n    def setup(self):\n{body}\n    def tiny(self):\n        return 1\n"
    chunks = chunk_file("big.py", text, "python", max_chunk_lines=10)
    assert rows(chunks) == [
        ("Big", "class", 1, 1),
        ("Big.setup", "method", 2, 11),
        ("Big.setup", "method", 11, 20),
        ("Big.setup", "method", 20, 22),
        ("Big.tiny", "method", 24, 25),
    ]


def test_definitions_stand_alone_and_plain_code_merges() -> None:
    text = (
        "import os\n"
        "import re\n"
        "\n"
        "A = 1\n"
        "B = 2\n"
        "\n"
        "def one():\n"
        "    return 1\n"
        "\n"
        "def two():\n"
        "    return 2\n"
        "\n"
        "def three():\n"
        "    return 3\n"
    )
    # The imports and constants read as the preamble of the function below them.
    assert rows(chunk_file("small.py", text, "python")) == [
        ("one", "function", 1, 8),
        ("two", "function", 10, 11),
        ("three", "function", 13, 14),
    ]
    # Under a tight limit the preamble is a block of its own.
    assert rows(chunk_file("small.py", text, "python", max_chunk_lines=6)) == [
        (None, "block", 1, 5),
        ("one", "function", 7, 8),
        ("two", "function", 10, 11),
        ("three", "function", 13, 14),
    ]
    # One-line definitions (signatures, lambdas in a row) group like plain code.
    one_liners = "def a(): return 1\ndef b(): return 2\ndef c(): return 3\n"
    assert rows(chunk_file("small.py", one_liners, "python")) == [(None, "block", 1, 3)]


def test_closing_lines_join_the_definition_before_them() -> None:
    text = (
        "#ifndef POINT_H\n"
        "#define POINT_H\n"
        "\n"
        "int area(int w, int h) {\n"
        "    int a = w * h;\n"
        "    return a;\n"
        "}\n"
        "\n"
        "#endif\n"
    )
    assert rows(chunk_file("point.h", text, "c")) == [("area", "function", 1, 9)]


def test_definitions_inside_namespaces_and_modules() -> None:
    text = (
        "mod tests {\n"
        "    use super::*;\n"
        "\n"
        "    fn check_one() {\n"
        "        let x = 1;\n"
        "        assert_eq!(x, 1);\n"
        "    }\n"
        "}\n"
    )
    assert rows(chunk_file("lib.rs", text, "rust")) == [("tests.check_one", "function", 1, 8)]


def test_fallback_windows_for_a_language_without_grammar() -> None:
    text = "".join(f"line {i}\n" for i in range(1, 201))
    for language in (None, "markdown", "no-such-language"):
        chunks = chunk_file("notes.txt", text, language)
        assert rows(chunks) == [
            (None, "window", 1, 80),
            (None, "window", 78, 157),
            (None, "window", 155, 200),
        ]
        assert_well_formed(chunks, "notes.txt", text, 80)


def test_a_file_with_syntax_errors_still_chunks() -> None:
    chunks = chunk_file("broken.py", BROKEN_PYTHON, "python")
    assert rows(chunks) == [("good", "function", 1, 6), (None, "block", 8, 15)]
    assert_well_formed(chunks, "broken.py", BROKEN_PYTHON, 80)


def test_blank_text_has_no_chunks() -> None:
    assert chunk_file("empty.py", "", "python") == []
    assert chunk_file("blank.py", "\n  \n\t\n", "python") == []


def test_crlf_and_non_ascii() -> None:
    text = "# café ünïcode\r\ndef f(x):\r\n    y = x\r\n    z = y\r\n    return z\r\n"
    chunks = chunk_file("u.py", text, "python")
    assert rows(chunks) == [("f", "function", 1, 5)]
    assert chunks[0].text == "# café ünïcode\ndef f(x):\n    y = x\n    z = y\n    return z"


def test_one_very_long_line() -> None:
    text = "x = [" + "1, " * 5000 + "]\n"
    chunks = chunk_file("long.py", text, "python")
    assert rows(chunks) == [(None, "block", 1, 1)]


def test_parsers_are_safe_across_threads() -> None:
    jobs = [(lang, path, text) for lang, (path, text) in SOURCES.items()] * 8
    serial = [chunk_file(path, text, lang) for lang, path, text in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda job: chunk_file(job[1], job[2], job[0]), jobs))
    assert parallel == serial


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        chunk_file("a.py", "x = 1\n", "python", max_chunk_lines=0)
