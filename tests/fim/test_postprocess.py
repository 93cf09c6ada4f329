from __future__ import annotations

import random

import pytest

from mimiverse.fim.brackets import quote_at_end, scan_brackets, unmatched_closers
from mimiverse.fim.postprocess import FimPostprocessor, is_mid_line, postprocess
from mimiverse.fim.templates import TEMPLATES

QWEN = TEMPLATES["qwen2.5-coder"].stop
DEEPSEEK = TEMPLATES["deepseek-coder"].stop
CODELLAMA = TEMPLATES["codellama"].stop

Case = tuple[str, str, str, tuple[str, ...], bool | None, str]

STOP_CASES: list[Case] = [
    ("def f(x):\n    return ", "\n", "x + 1<|endoftext|>junk", QWEN, None, "x + 1"),
    ("a = ", "\n", "1\n\nb = 2", ("\n\n",), None, "1"),  # a client stop
    ("", "", "ab<|file_sep|>cd<|endoftext|>", QWEN, None, "ab"),  # the first one wins
    ("x = ", "\n", "<|endoftext|>", QWEN, None, ""),
    ("", "", "foo()<｜end▁of▁sentence｜>bar", DEEPSEEK, None, "foo()"),
    ("", "", "go()<EOT>", CODELLAMA, None, "go()"),
    ("", "", "a <b> c", QWEN, None, "a <b> c"),  # a look-alike is not a stop
]

OVERLAP_CASES: list[Case] = [
    # The answer ran on into the suffix: drop the repeated start of the suffix.
    ("x = foo", "bar)\n", "(1, bar)", (), None, "(1, "),
    ("x = ", "b)\n", "foo(a, b)", (), None, "foo(a, "),
    ("int x = ", ";\n", "42;", (), None, "42"),  # the suffix's whole first line
    ("x = ", "   bar(y)\n", "f(bar(y)", (), None, "f("),  # suffix indentation ignored
    # The answer stopped part-way into the suffix's next line (at its indentation).
    ("def f():\n    ", "\n    return x\n", "y = 1\n    retu", (), None, "y = 1"),
    # Not repeats: a word that merely ends the same, and a 1-character coincidence.
    ("x = ", "bar\n", "rebar", (), None, "rebar"),
    ("s = ", "x.y\n", "a.x", (), None, "a.x"),
    # The answer's own `)` closes its own `(`; the suffix's `)` closes `print(`.
    ("print(", ")\n", "f(x)", (), None, "f(x)"),
]

REPEAT_CASES: list[Case] = [
    # The next line of the suffix, repeated at a line start: cut before it.
    ("def f():\n    ", "\n    return x\n", "y = 1\n    return x\n", (), None, "y = 1"),
    (
        "def f():\n    ",
        "\n    return x\n",
        "y = 1\n    return x\n    z = 2\n",
        (),
        None,
        "y = 1",
    ),
    # Cursor at a line start before code: keep the newline, the suffix brings its indent.
    ("def f():\n", "    return x\n", "    y = 1\n    return x\n", (), None, "    y = 1\n"),
    ("def f():\n    ", "return x\n", "y = 1\n    return x", (), None, "y = 1\n    "),
    # The answer's first line already is the suffix's line: nothing to insert.
    ("def f():\n    ", "\n    return x\n", "return x\n", (), None, ""),
    # Same text at a deeper indentation is a different line.
    (
        "def f(a):\n    if a:\n        ",
        "\n    return x\n",
        "y = 1\n        return x\n",
        (),
        None,
        "y = 1\n        return x",
    ),
    # A longer line that merely starts like the suffix's line stays.
    ("def f():\n    ", "\n    return x\n", "y = 1\n    return x + 1\n", (), None,
     "y = 1\n    return x + 1"),
]  # fmt: skip

BRACKET_CASES: list[Case] = [
    ("foo(", ")\n", "a, b)", (), None, "a, b"),
    ("x = [", "]", "1, 2, 3]", (), None, "1, 2, 3"),
    ("call(a, {", "})\n", "b: 1})", (), None, "b: 1"),
    # The answer may close `foo(` (the suffix does not), but not the function's `{`.
    ("function f() {\n  foo(", "\n}\n", "x);\n  bar();\n}\n", (), None, "x);\n  bar();"),
    ("if (a) {\n    foo();", "\n}\n", "\n    bar();\n}", (), None, "\n    bar();"),
    # Brackets in string literals do not count.
    ("log(", ")\n", "\"a)\" + ')')x", (), None, "\"a)\" + ')'"),
    # The cursor is inside a string: its closing quote and `)` come from the suffix.
    ('print("hello ', '")\n', 'world")', (), None, "world"),
    # A closer with nothing to close (prefix trimmed away) that the suffix supplies.
    ("", "})\n", "x = 1})", (), None, "x = 1"),
    # A closer on its own line; its line break and indentation go with it.
    ("x = [\n    1,", "\n    ]\n", "\n    2,\n    ]", (), None, "\n    2,"),
    # The suffix does not close `(`: the answer must.
    ("foo(a, ", "\n\nbar()\n", "b)", (), None, "b)"),
]

SINGLE_LINE_CASES: list[Case] = [
    ("total = ", " * rate\n", "price\nmore", (), None, "price"),
    ("total = ", " * rate\n", "price\r\nmore", (), None, "price"),
    # Block continuation after an opener: new, deeper-indented lines are kept.
    ("foo(", ")\n", "\n    a,\n    b,\n)", (), None, "\n    a,\n    b,\n"),
    ("function f() {", "}\n", "\n  return 1;\n", (), None, "\n  return 1;\n"),
    # Not deeper than the prefix's line: no block, so the answer ends at the break.
    ("    foo(", ")\n", "\n    a)", (), None, ""),
    ("foo(", ")\n", "\n   ", (), None, ""),  # the stream ended before any code
    ("foo(", ")\n", "a, b\n    c", (), None, "a, b"),  # text before the break: one line
    # Forced either way.
    ("def f():\n    ", "\n", "a = 1\nb = 2", (), True, "a = 1"),
    ("foo(", ")\n", "\n    a,\n)", (), True, ""),
    ("total = ", " * rate\n", "price\nmore", (), False, "price\nmore"),
    # Not mid-line: several lines are fine.
    ("def f():\n    ", "\n", "a = 1\n    b = 2\n", (), None, "a = 1\n    b = 2"),
]

WHITESPACE_CASES: list[Case] = [
    ("a = ", "\n", "1   \n\n", (), None, "1"),
    ("", "", "hello   \n\n", (), None, "hello"),
    ("a = ", "\n", "f(1,   2)  \n", (), None, "f(1,   2)"),  # only the end is touched
    ("return ", "x\n", "not ", (), None, "not "),  # code follows on the line: keep
    ("def f():\n", "    return x\n", "    y = 1\n    ", (), None, "    y = 1\n    "),
]

# The prompt left out the last space of the cursor's indentation (templates.heal_indent):
# the answer's leading spaces stand for the cursor's indentation (one space from a base
# model, the whole indentation restated by an instruct one). Only then.
HEAL_CASES: list[Case] = [
    ("def f():\n    ", "\n", " return 1\n", (), None, "return 1"),
    ("def f():\n    ", "\n", " if x:\n        y()\n    z()\n", (), None,
     "if x:\n        y()\n    z()"),
    ("def f():\n    ", "\n", "return 1", (), None, "return 1"),  # no space: kept as is
    ("def f():\n    ", "\n", "  x = 1", (), None, "x = 1"),
    # Qwen2.5-Coder-0.5B-Instruct's answer after a 4-space cursor line, as seen.
    ("def fibonacci(n):\n    ", "\n",
     "    if n <= 1:\n        return n\n    else:\n        return fibonacci(n-1)", (), None,
     "if n <= 1:\n        return n\n    else:\n        return fibonacci(n-1)"),
    ("def f():\n    ", "\n", " ", (), None, ""),
    ("def f():\n    ", "\n", " x = 1<|endoftext|>", QWEN, None, "x = 1"),
    ("    ", "", " x", (), None, "x"),
    ("def f():\n    ", "return x\n", " y = 1\n    return x", (), None, "y = 1\n    "),
    # Not healed: tabs, code before the cursor, a cursor at column 0.
    ("def f():\n\t", "\n", " x", (), None, " x"),
    ("x =", "\n", " 1", (), None, " 1"),
    ("def f():\n", "\n", " x", (), None, " x"),
]

ALL_CASES = (
    STOP_CASES
    + OVERLAP_CASES
    + REPEAT_CASES
    + BRACKET_CASES
    + SINGLE_LINE_CASES
    + WHITESPACE_CASES
    + HEAL_CASES
)


def _ids(cases: list[Case]) -> list[str]:
    return [repr(case[2])[:40] for case in cases]


@pytest.mark.parametrize(
    ("prefix", "suffix", "text", "stop", "single_line", "expected"),
    ALL_CASES,
    ids=_ids(ALL_CASES),
)
def test_postprocess(
    prefix: str,
    suffix: str,
    text: str,
    stop: tuple[str, ...],
    single_line: bool | None,
    expected: str,
) -> None:
    assert postprocess(prefix, suffix, text, stop, single_line=single_line) == expected


@pytest.mark.parametrize(
    ("prefix", "suffix", "mid"),
    [
        ("foo(", ")", True),
        ("a\nx = ", " + 1\nb", True),
        ("foo(", "\n)", False),  # cursor at the end of the line
        ("    ", "return x", False),  # cursor in the indentation before code
        ("", "x", False),
        ("x = 1", "", False),
        ("x = ", "   \n", False),
    ],
)
def test_is_mid_line(prefix: str, suffix: str, mid: bool) -> None:
    assert is_mid_line(prefix, suffix) is mid


def run(processor: FimPostprocessor, deltas: list[str]) -> list[str]:
    return [processor.feed(delta) for delta in deltas] + [processor.finish()]


def test_a_stop_split_across_deltas_never_leaks() -> None:
    processor = FimPostprocessor("x = ", "\n", QWEN)
    assert processor.feed("1 + 2<|end") == "1 + 2"
    assert not processor.done
    assert processor.feed("oft") == ""
    assert processor.feed("ext|>more") == ""
    assert processor.done
    assert processor.feed("even more") == ""
    assert processor.finish() == ""


def test_a_held_tail_is_released_when_it_is_not_a_stop() -> None:
    processor = FimPostprocessor("x = ", "\n", QWEN)
    assert run(processor, ["a <", "b"]) == ["a", " <b", ""]
    assert not processor.done


def test_a_possible_suffix_overlap_is_held_until_it_diverges() -> None:
    processor = FimPostprocessor("x = foo", "bar)\n")
    assert run(processor, ["(1, ba", "z"]) == ["(1, ", "baz", ""]


def test_a_possible_repeated_line_is_held_until_it_is_known() -> None:
    processor = FimPostprocessor("def f():\n    ", "\n    return x\n")
    deltas = ["y = 1\n", "    ret", "urn x\n", "more"]
    assert run(processor, deltas) == ["y = 1", "", "", "", ""]
    assert processor.done


def test_single_line_stops_the_upstream_at_the_break() -> None:
    processor = FimPostprocessor("total = ", " * rate\n")
    assert processor.feed("price") == "price"
    assert processor.feed("\nmore") == ""
    assert processor.done


def test_a_block_after_an_opener_streams_line_by_line() -> None:
    processor = FimPostprocessor("foo(", ")\n")
    assert processor.feed("\n") == ""  # is it a block? not known yet
    assert processor.feed("    a,") == "\n    a,"
    assert processor.feed("\n)") == "\n"
    assert processor.done


def test_finish_twice_and_feed_after_finish_return_nothing() -> None:
    processor = FimPostprocessor("", "", QWEN)
    assert processor.feed("abc") == "abc"
    assert processor.finish() == ""
    assert processor.finish() == ""
    assert processor.feed("more") == ""
    assert not processor.done  # the stream ended; no rule fired


FRAGMENTS = [
    "(", ")", "[", "]", "{", "}", "'", '"', "\\", "\n", "\r\n", "    ", " ", "\t", "x",
    "return x", "foo", "bar", ");", "})", ":", ",", "y = 1", "\n    return x",
    "<|endoftext|>", "<|end", "<|", "<|file_sep|>", "\n\n", "STOP", "ST",
]  # fmt: skip
PREFIXES = [
    "", "def f(x):\n    ", "foo(", "x = foo", "if (a) {\n    foo();", "function f() {\n  foo(",
    'print("hi ', "def f():\n", "  call(a, {", "x = [", "s = 'it", "class A:\n    def g(s):\n",
]  # fmt: skip
SUFFIXES = [
    "", "\n", ")\n", "\n    return x\n", "    return x\n", '")\n', "bar)\n", "\n}\n", "]",
    "})\n", " return x", "\n\n  y = 2", ");\nfoo()", "  return x\n", "x.y\n",
]  # fmt: skip
STOPS = [(), QWEN, ("STOP", "\n\n"), ("<|endoftext|>", ")x")]


def _generated_cases(rng: random.Random, count: int) -> list[Case]:
    cases: list[Case] = []
    for _ in range(count):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 14)))
        cases.append(
            (
                rng.choice(PREFIXES),
                rng.choice(SUFFIXES),
                text,
                rng.choice(STOPS),
                rng.choice([None, None, True, False]),
                "",
            )
        )
    return cases


def _random_split(rng: random.Random, text: str) -> list[str]:
    deltas = []
    i = 0
    while i < len(text):
        size = rng.randint(1, 6)
        deltas.append(text[i : i + size])
        i += size
    return deltas


def test_any_split_into_deltas_gives_the_same_text() -> None:
    rng = random.Random(20240611)
    cases = ALL_CASES + _generated_cases(rng, 3000)
    for prefix, suffix, text, stop, single_line, _ in cases:
        whole = postprocess(prefix, suffix, text, stop, single_line=single_line)
        for _ in range(5):
            processor = FimPostprocessor(prefix, suffix, stop, single_line=single_line)
            streamed = ""
            for delta in _random_split(rng, text):
                streamed += processor.feed(delta)
                # What was emitted is final: it must begin the whole-text answer.
                assert whole.startswith(streamed), (prefix, suffix, text, stop, single_line)
            streamed += processor.finish()
            assert streamed == whole, (prefix, suffix, text, stop, single_line)
            assert not any(s in streamed for s in stop)


def test_one_character_deltas_match_too() -> None:
    for prefix, suffix, text, stop, single_line, expected in ALL_CASES:
        processor = FimPostprocessor(prefix, suffix, stop, single_line=single_line)
        assert "".join(run(processor, list(text))) == expected, text


def _bracket_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice("()[]{}'\"`\\\n ab") for _ in range(size))


def test_the_quote_at_the_cursor_is_read_from_the_last_line() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        text = _bracket_text(rng, rng.randint(0, 40))
        assert quote_at_end(text) == scan_brackets(text, None)[1], text
    # A backslash before the last line break may continue a literal: all is read.
    assert quote_at_end('x = "a\\\nb') == '"'
    assert quote_at_end('x = "a\nb') is None


def test_prefix_and_suffix_are_scanned_only_when_a_rule_needs_them() -> None:
    prefix = "def f(a, b):\n    return g(a, [b, {\n" * 50 + "    "
    suffix = "\n    }])\n" * 50
    plain = FimPostprocessor(prefix, suffix, QWEN)
    assert plain.feed("x = 1\n    y = x") == "x = 1\n    y = x"
    assert (plain._open, plain._closers) == (None, None)  # nothing closed, no overlap
    closing = FimPostprocessor("print(f(", ")\n", QWEN)
    assert closing.feed("x))") == "x"  # rule 3: the suffix closes `print(`
    assert closing._open == ["(", "("] and closing._closers == [")"]


def test_lazy_scans_give_the_eager_answers() -> None:
    """The lazily found openers, closers and limit equal a full scan's, whatever the text."""
    rng = random.Random(11)
    for _ in range(1000):
        prefix, suffix = _bracket_text(rng, 30), _bracket_text(rng, 30)
        processor = FimPostprocessor(prefix, suffix)
        stack, quote = scan_brackets(prefix, None)
        closers = unmatched_closers(suffix, quote, 64)
        limit = len(stack)
        if closers:
            wanted = {")": "(", "]": "[", "}": "{"}[closers[0]]
            limit = next((d for d, o in enumerate(reversed(stack)) if o == wanted), limit)
        assert processor._start_quote == quote
        assert processor._close_limit() == limit
        assert processor._prefix_open() == stack
        assert processor._suffix_closers() == closers
