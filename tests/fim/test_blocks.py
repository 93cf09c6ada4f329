"""Rule 7: multi-line answers end where the code leaves the block being written.

Each case is (language, prefix, suffix, raw answer, expected text), and the expected text
must come out the same whether the answer arrives whole or one character at a time.
"""

from __future__ import annotations

import pytest

from mimiverse.fim.postprocess import FimPostprocessor, postprocess

CASES: list[tuple[str, str, str, str, str, str]] = [
    # -- Python ---------------------------------------------------------------------------
    ("python-dedent", "python",
     "def area(w, h):\n    ", "\n",
     "return w * h\n\ndef perimeter(w, h):\n    return 2 * (w + h)\n",
     "return w * h"),
    ("python-outer-else", "python",
     "if ready:\n    if fast:\n        ", "\n",
     "go()\n        log('fast')\n    else:\n        wait()\n",
     "go()\n        log('fast')"),
    ("python-blank-after-statement", "python",
     "def load(path):\n    ", "\n    return data\n",
     "with open(path) as f:\n        data = f.read()\n\n    data = data.strip()\n",
     "with open(path) as f:\n        data = f.read()"),
    ("python-blank-inside-open-call", "python",
     "def run():\n    ", "\n",
     "call(\n        1,\n\n        2)\n    x = 1\n\n    y = 2\n",
     "call(\n        1,\n\n        2)\n    x = 1"),
    ("python-new-definition-at-top-level", "python",
     "", "\n",
     "def first():\n    return 1\ndef second():\n    return 2\n",
     "def first():\n    return 1"),
    ("python-decorator-starts-a-definition", "python",
     "import os\n", "\n",
     "def first():\n    return os.sep\n@cache\ndef second():\n    pass\n",
     "def first():\n    return os.sep"),
    ("python-body-after-opener", "python",
     "class Point:\n    def norm(self):", "\n",
     "\n        return (self.x ** 2 + self.y ** 2) ** 0.5\n    def scale(self, k):\n",
     "\n        return (self.x ** 2 + self.y ** 2) ** 0.5"),
    # -- JavaScript / TypeScript ------------------------------------------------------------
    ("js-closing-brace-kept-then-stop", "javascript",
     "function total(items) {\n  ", "",
     "return items.reduce((a, b) => a + b, 0);\n}\n\nfunction mean(items) {\n",
     "return items.reduce((a, b) => a + b, 0);\n}"),
    ("js-suffix-closes-the-block", "javascript",
     "function total(items) {\n  ", "\n}\n",
     "let sum = 0;\n  for (const i of items) sum += i;\n  return sum;\n}\n",
     "let sum = 0;\n  for (const i of items) sum += i;\n  return sum;"),
    ("ts-top-level-interface", "typescript",
     "", "\n",
     "export type Id = string;\ninterface User {\n  id: Id;\n}\n",
     "export type Id = string;"),
    ("tsx-editor-language-id", "typescriptreact",
     "", "\n",
     "const a = 1;\nexport const b = 2;\n",
     "const a = 1;"),
    # -- Go ----------------------------------------------------------------------------------
    ("go-dedent-to-func", "go",
     "func Max(a, b int) int {\n\tif a > b {\n\t\t", "\n\t}\n\treturn b\n}\n",
     "return a\n\t}\n\treturn b\n}\n",
     "return a"),
    ("go-next-func", "go",
     "package geo\n\n", "\n",
     "func Area(w, h float64) float64 {\n\treturn w * h\n}\nfunc Perimeter() {}\n",
     "func Area(w, h float64) float64 {\n\treturn w * h\n}"),
    # -- Rust --------------------------------------------------------------------------------
    ("rust-blank-after-statement", "rust",
     "fn main() {\n    ", "\n}\n",
     "let v = vec![1, 2, 3];\n    println!(\"{:?}\", v);\n\n    let w = v.len();\n",
     "let v = vec![1, 2, 3];\n    println!(\"{:?}\", v);"),
    ("rust-next-item", "rust",
     "", "\n",
     "pub fn id(x: u32) -> u32 {\n    x\n}\nimpl Foo {}\n",
     "pub fn id(x: u32) -> u32 {\n    x\n}"),
    ("rust-attribute-starts-an-item", "rust",
     "", "\n",
     "fn a() {}\n#[test]\nfn b() {}\n",
     "fn a() {}"),
    # -- Java --------------------------------------------------------------------------------
    ("java-method-body", "java",
     "class Box {\n    int size() {\n        ", "\n    }\n}\n",
     "return items.size();\n    }\n\n    int capacity() {\n",
     "return items.size();"),
    ("java-annotation-at-top", "java",
     "", "\n",
     "class A {}\n@Deprecated\nclass B {}\n",
     "class A {}"),
    # -- C / C++ -----------------------------------------------------------------------------
    ("c-dedent", "c",
     "int sum(int *a, int n) {\n    int s = 0;\n    ", "\n}\n",
     "for (int i = 0; i < n; i++) s += a[i];\n    return s;\n}\nint main(void) {\n",
     "for (int i = 0; i < n; i++) s += a[i];\n    return s;"),
    ("c-next-function", "c",
     "#include <stdio.h>\n", "\n",
     "static int twice(int x) {\n    return 2 * x;\n}\nint main(void) {\n",
     "static int twice(int x) {\n    return 2 * x;\n}"),
    ("cpp-blank-line-incomplete", "cpp",
     "int main() {\n    ", "\n}\n",
     "auto v = std::vector<int>{\n\n        1, 2};\n    return v.size();\n",
     "auto v = std::vector<int>{\n\n        1, 2};\n    return v.size();"),
    ("python-blank-line-inside-a-docstring", "python",
     "class Style:\n    ", "\n",
     'def plain(self) -> str:\n        """The text.\n\n        No markup.\n        """\n'
     '        return self.text\n\n    def other(self):\n',
     'def plain(self) -> str:\n        """The text.\n\n        No markup.\n        """\n'
     '        return self.text'),
    ("python-one-line-docstring-closes", "python",
     "class Style:\n    ", "\n",
     'def plain(self):\n        """The text."""\n\n        return 1\n',
     'def plain(self):\n        """The text."""'),
    ("python-single-quoted-docstring", "python",
     "def f():\n    ", "\n",
     "x = '''a\n\nb''' + '''c'''\n    y = 1\n\n    z = 2\n",
     "x = '''a\n\nb''' + '''c'''\n    y = 1"),
    ("java-text-block", "java",
     "class A {\n    String s() {\n        ", "\n    }\n}\n",
     'return """\n            a\n\n            b""";\n\n        int x;\n',
     'return """\n            a\n\n            b""";'),
    # -- any language ------------------------------------------------------------------------
    ("unknown-language-dedent-and-blank", None,
     "block:\n    ", "\n",
     "one\n    two\n\n    three\n",
     "one\n    two"),
    ("continuation-is-not-complete", "python",
     "def f():\n    ", "\n",
     "x = 1 + \\\n\n        2\n    return x\n",
     "x = 1 + \\\n\n        2\n    return x"),
]


@pytest.mark.parametrize(("language", "prefix", "suffix", "raw", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_block_end(language: str | None, prefix: str, suffix: str, raw: str,
                   expected: str) -> None:
    assert postprocess(prefix, suffix, raw, language=language) == expected
    streamed = FimPostprocessor(prefix, suffix, language=language)
    out = ""
    for ch in raw:
        out += streamed.feed(ch)
        if streamed.done:
            break
    assert out + streamed.finish() == expected


def test_the_upstream_is_stopped_as_soon_as_the_block_ends() -> None:
    processor = FimPostprocessor("def f():\n    ", "\n", language="python")
    assert processor.feed("return 1\n") == "return 1"
    assert not processor.done
    assert processor.feed("def") == ""
    assert processor.done  # column 0 after the body: the block has ended, stop generating
    assert processor.finish() == ""


def test_single_line_answers_are_left_to_rule_two() -> None:
    assert postprocess("x = compute(", ")\n", "a, b\n\ny = 2", language="python") == "a, b"
