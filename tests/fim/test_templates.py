from __future__ import annotations

from typing import get_args

import pytest

from mimiverse.config import Family
from mimiverse.errors import ConfigError
from mimiverse.fim.templates import (
    TEMPLATES,
    ContextFile,
    comment_prefix,
    heal_indent,
    indent_healed,
    infer_family,
    template_for,
)

# The cursor sits in the body's indentation: every prompt shows one space less of it
# (indentation healing, see test_indentation_healing).
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"
CONTEXT = (
    ContextFile("util/math.py", "def sub(a, b):\n    return a - b\n"),
    ContextFile("README.md", "Adds numbers."),
)


def test_every_configurable_family_has_a_template() -> None:
    assert tuple(TEMPLATES) == get_args(Family)
    for name, template in TEMPLATES.items():
        assert template.family == name
        assert template.stop, name


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (
            "qwen2.5-coder",
            "<|fim_prefix|>def add(a, b):\n   <|fim_suffix|>\n\nprint(add(1, 2))\n"
            "<|fim_middle|>",
        ),
        (
            "starcoder2",
            "<fim_prefix>def add(a, b):\n   <fim_suffix>\n\nprint(add(1, 2))\n<fim_middle>",
        ),
        (
            "deepseek-coder",
            "<｜fim▁begin｜>def add(a, b):\n   <｜fim▁hole｜>\n\nprint(add(1, 2))\n<｜fim▁end｜>",
        ),
        ("codellama", "<PRE> def add(a, b):\n    <SUF>\n\nprint(add(1, 2))\n <MID>"),
        ("codestral", "[SUFFIX]\n\nprint(add(1, 2))\n[PREFIX] def add(a, b):\n   "),
    ],
)
def test_single_file_prompt(family: str, expected: str) -> None:
    assert TEMPLATES[family].render(PREFIX, SUFFIX) == expected


@pytest.mark.parametrize("family", list(TEMPLATES))
def test_a_path_alone_keeps_the_plain_prompt(family: str) -> None:
    template = TEMPLATES[family]
    assert template.render(PREFIX, SUFFIX, path="calc.py") == template.render(PREFIX, SUFFIX)


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (
            "qwen2.5-coder",
            "<|repo_name|>calc\n"
            "<|file_sep|>util/math.py\ndef sub(a, b):\n    return a - b\n\n"
            "<|file_sep|>README.md\nAdds numbers.\n"
            "<|file_sep|>calc.py\n"
            "<|fim_prefix|>def add(a, b):\n   <|fim_suffix|>\n\nprint(add(1, 2))\n"
            "<|fim_middle|>",
        ),
        (
            "starcoder2",
            "<repo_name>calc"
            "<file_sep>util/math.py\ndef sub(a, b):\n    return a - b\n"
            "<file_sep>README.md\nAdds numbers."
            "<file_sep><fim_prefix>calc.py\ndef add(a, b):\n   "
            "<fim_suffix>\n\nprint(add(1, 2))\n<fim_middle>",
        ),
        (
            "deepseek-coder",
            "<｜fim▁begin｜># util/math.py\ndef sub(a, b):\n    return a - b\n\n"
            "# README.md\nAdds numbers.\n\n"
            "# calc.py\ndef add(a, b):\n   <｜fim▁hole｜>\n\nprint(add(1, 2))\n<｜fim▁end｜>",
        ),
        (
            "codellama",
            "<PRE> # util/math.py\ndef sub(a, b):\n    return a - b\n\n"
            "# README.md\nAdds numbers.\n\n"
            "# calc.py\ndef add(a, b):\n    <SUF>\n\nprint(add(1, 2))\n <MID>",
        ),
        (
            "codestral",
            "[SUFFIX]\n\nprint(add(1, 2))\n[PREFIX] # util/math.py\n"
            "def sub(a, b):\n    return a - b\n\n"
            "# README.md\nAdds numbers.\n\n"
            "# calc.py\ndef add(a, b):\n   ",
        ),
    ],
)
def test_multi_file_prompt(family: str, expected: str) -> None:
    rendered = TEMPLATES[family].render(
        PREFIX, SUFFIX, path="calc.py", context=CONTEXT, repo_name="calc"
    )
    assert rendered == expected


@pytest.mark.parametrize(
    ("family", "path", "context", "repo_name", "expected"),
    [
        # Repo name alone switches to the repository form with just the current file.
        (
            "qwen2.5-coder",
            "calc.py",
            (),
            "calc",
            "<|repo_name|>calc\n<|file_sep|>calc.py\n<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>",
        ),
        (
            "starcoder2",
            "calc.py",
            (),
            "calc",
            "<repo_name>calc<file_sep><fim_prefix>calc.py\nx<fim_suffix>y<fim_middle>",
        ),
        # Context without a repo name or current path: those parts are left out.
        (
            "qwen2.5-coder",
            None,
            (ContextFile("a.py", "A = 1"),),
            None,
            "<|file_sep|>a.py\nA = 1\n<|file_sep|><|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>",
        ),
        (
            "starcoder2",
            None,
            (ContextFile("a.py", "A = 1"),),
            None,
            "<file_sep>a.py\nA = 1<file_sep><fim_prefix>x<fim_suffix>y<fim_middle>",
        ),
        # Comment syntax follows each file's extension.
        (
            "deepseek-coder",
            "main.go",
            (ContextFile("src/lib.rs", "pub fn a() {}\n"),),
            None,
            "<｜fim▁begin｜>// src/lib.rs\npub fn a() {}\n\n// main.go\n"
            "x<｜fim▁hole｜>y<｜fim▁end｜>",
        ),
        (
            "codellama",
            None,
            (ContextFile("q.sql", "SELECT 1;"),),
            None,
            "<PRE> -- q.sql\nSELECT 1;\n\nx <SUF>y <MID>",
        ),
    ],
)
def test_partial_multi_file_prompts(
    family: str,
    path: str | None,
    context: tuple[ContextFile, ...],
    repo_name: str | None,
    expected: str,
) -> None:
    rendered = TEMPLATES[family].render("x", "y", path=path, context=context, repo_name=repo_name)
    assert rendered == expected


@pytest.mark.parametrize(
    ("path", "marker"),
    [
        ("a.py", "#"),
        ("run.sh", "#"),
        ("lib/x.rb", "#"),
        ("web/app.TS", "//"),
        ("main.go", "//"),
        ("src\\lib.rs", "//"),
        ("A.java", "//"),
        ("x.c", "//"),
        ("x.cpp", "//"),
        ("init.lua", "--"),
        ("Makefile", "#"),
        ("notes.unknownext", "#"),
    ],
)
def test_comment_prefix(path: str, marker: str) -> None:
    assert comment_prefix(path) == marker


@pytest.mark.parametrize(
    ("family", "must_stop"),
    [
        (
            "qwen2.5-coder",
            {"<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|fim_prefix|>"},
        ),
        ("starcoder2", {"<|endoftext|>", "<file_sep>", "<fim_prefix>", "<repo_name>"}),
        ("deepseek-coder", {"<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>"}),
        ("codellama", {"<EOT>"}),
        ("codestral", {"</s>"}),
    ],
)
def test_stop_tokens(family: str, must_stop: set[str]) -> None:
    assert must_stop <= set(TEMPLATES[family].stop)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("qwen2.5-coder:1.5b", "qwen2.5-coder"),
        ("Qwen/Qwen2.5-Coder-7B", "qwen2.5-coder"),
        ("qwen2.5-coder-1.5b-instruct-q8_0.gguf", "qwen2.5-coder"),
        ("starcoder2:3b", "starcoder2"),
        ("bigcode/starcoder2-15b", "starcoder2"),
        ("deepseek-coder:6.7b-base", "deepseek-coder"),
        ("deepseek-coder-v2", "deepseek-coder"),
        ("deepseek-ai/DeepSeek-Coder-V2-Lite-Base", "deepseek-coder"),
        ("codellama:7b-code", "codellama"),
        ("codellama/CodeLlama-13b-hf", "codellama"),
        ("codestral:22b", "codestral"),
        ("mistralai/Codestral-22B-v0.1", "codestral"),
        ("CODESTRAL", "codestral"),
        ("llama3.1:8b", None),
        ("qwen3:8b", None),
        ("starcoder:1b", None),  # StarCoder 1 has other special tokens
        ("", None),
    ],
)
def test_infer_family(model: str, family: str | None) -> None:
    assert infer_family(model) == family


def test_configured_family_wins_over_the_name() -> None:
    assert template_for("qwen2.5-coder:1.5b", "codellama") is TEMPLATES["codellama"]


def test_family_is_inferred_when_not_configured() -> None:
    assert template_for("bigcode/starcoder2-15b", None) is TEMPLATES["starcoder2"]


def test_unknown_model_names_the_model_and_the_families() -> None:
    with pytest.raises(ConfigError) as info:
        template_for("my-finetune:7b", None)
    message = str(info.value)
    assert "'my-finetune:7b'" in message
    for family in get_args(Family):
        assert family in message


def test_unknown_family_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown FIM family 'gpt'.*qwen2\.5-coder"):
        template_for("qwen2.5-coder:1.5b", "gpt")


@pytest.mark.parametrize(
    ("prefix", "shown"),
    [
        ("def f():\n    ", "def f():\n   "),  # the indentation's last space goes
        ("def f():\n        ", "def f():\n       "),
        ("    ", "   "),  # the first line of a file
        (" ", ""),
        ("def f():\n\t", "def f():\n\t"),  # a tab is a token of its own
        ("def f():\n\t ", "def f():\n\t"),
        ("x = ", "x = "),  # code before the cursor: not a line's indentation
        ("def f():\n    return ", "def f():\n    return "),
        ("def f():\n", "def f():\n"),  # column 0: nothing to heal
        ("", ""),
    ],
)
def test_indentation_healing(prefix: str, shown: str) -> None:
    assert heal_indent(prefix) == shown
    assert indent_healed(prefix) == (shown != prefix)
    assert TEMPLATES["qwen2.5-coder"].render(prefix, "\n") == (
        f"<|fim_prefix|>{shown}<|fim_suffix|>\n<|fim_middle|>"
    )
