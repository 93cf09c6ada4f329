"""Rule 7 of the FIM post-processor: where a multi-line answer leaves the block being written.

Code models, instruct-tuned ones above all, rarely emit an end token: they finish the
hole and run on into whatever would come next. A developer's completion ends where the
code leaves the block the cursor is in:

- a line indented less than that block (`else:` of an outer `if`, the next method), but
  not a line that opens with a closer: rule 3 decides about those (the suffix may bring it);
- a new top-level definition, once the answer has a line of its own (per language);
- a blank line after a complete statement (brackets balanced, no continuation pending).

Lines inside a triple-quoted string the answer opened (a docstring, a Java text block)
are text: neither their indentation nor their blank lines end anything.

`BlockEnd` sees the answer character by character like the rest of the post-processor,
returns the cut position when a rule fires, and says how much of the tail it may still
cut (`hold`), so nothing emitted ever has to be taken back.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Definitions that start at column 0 of a file, by language (walker.detect_language names).
_TOP_LEVEL: dict[str, re.Pattern[str]] = {
    "python": re.compile(r"(?:async\s+def|def|class)\s|@\w"),
    "javascript": re.compile(
        r"(?:export\s+)?(?:default\s+)?(?:async\s+)?"
        r"(?:function|class|const|let|var|import)\b"
    ),
    "go": re.compile(r"(?:func|type|var|const|import|package)\b"),
    "rust": re.compile(
        r"(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+|unsafe\s+|const\s+)*"
        r"(?:fn|struct|enum|impl|trait|mod|use|static|const|type|macro_rules!)\b|#!?\["
    ),
    "java": re.compile(
        r"(?:public|private|protected|abstract|final|sealed|static|class|interface|enum|"
        r"record|import|package)\b|@\w"
    ),
    "c": re.compile(
        r"#\s*(?:include|define|if|ifdef|ifndef|pragma)\b|"
        r"(?:typedef|struct|enum|union|static|extern|inline|class|namespace|template)\b|"
        r"[A-Za-z_][\w\s\*&:<>,]*[\s\*&]\**[A-Za-z_][\w:]*\s*\("
    ),
}
_TOP_LEVEL["typescript"] = _TOP_LEVEL["tsx"] = re.compile(
    _TOP_LEVEL["javascript"].pattern[:-3]
    + r"|interface|type|enum|declare|namespace|abstract\s+class)\b"
)
_TOP_LEVEL["cpp"] = _TOP_LEVEL["cuda"] = _TOP_LEVEL["c"]
# Editors' language ids (VS Code, LSP) that differ from ours.
_ALIASES = {"typescriptreact": "tsx", "javascriptreact": "javascript", "js": "javascript",
            "ts": "typescript", "py": "python", "golang": "go", "rs": "rust", "c++": "cpp",
            "h": "c", "cc": "cpp", "cxx": "cpp"}

# A line ending in one of these continues on the next line: no statement is complete.
# Not ".": prose in docstrings and comments ends with it far more often than code does.
_CONTINUES = ("\\", ",", "(", "[", "{", "=", "+", "-", "*", "/", "%", "&", "|", "<", ">",
              "?", ":", "->", "=>")
_CLOSERS = ")]}"
_BLOCK_OPENERS = (":", "{", "(", "[")
_TRIPLE_QUOTES = ('"""', "'''")  # multi-line strings: Python, Java, Kotlin, Swift, Scala


def _triple_quote_after(line: str, open_quote: str | None) -> str | None:
    """The triple quote still open after `line`, given the one open before it."""
    at = 0
    while True:
        if open_quote is not None:
            end = line.find(open_quote, at)
            if end < 0:
                return open_quote
            open_quote, at = None, end + 3
            continue
        found = [(i, q) for q in _TRIPLE_QUOTES if (i := line.find(q, at)) >= 0]
        if not found:
            return None
        at, open_quote = min(found)
        at += 3


def _width(indent: str) -> int:
    return len(indent.expandtabs(4))


class BlockEnd:
    """Streaming detector for rule 7 (see the module docstring)."""

    def __init__(self, prefix: str, language: str | None,
                 balanced: Callable[[], bool]) -> None:
        cursor_line = prefix[prefix.rfind("\n") + 1 :]
        indent = _width(cursor_line[: len(cursor_line) - len(cursor_line.lstrip())])
        self._cursor_indent = indent
        # A cursor after `def f():` or `{` writes the block's body: its first line, one
        # level deeper, sets the block; otherwise the cursor's own line does.
        opens = cursor_line.strip() != "" and cursor_line.rstrip().endswith(_BLOCK_OPENERS)
        self._base: int | None = None if opens else indent
        name = (language or "").lower()
        self._top_level = _TOP_LEVEL.get(_ALIASES.get(name, name))
        self._balanced = balanced
        self._line_start = 0  # where the answer's current line starts
        self._checked = -1  # line start whose indentation was already checked
        self._code_end: int | None = None  # the line break after the last line with code
        self._code_line = ""  # that line
        self._pending_top = False  # current line is at column 0 and may be a definition
        self._triple: str | None = None  # a triple-quoted string the answer left open

    def scan(self, raw: str, i: int, ch: str) -> int | None:
        """Look at raw[i]; return the cut position when a rule fires."""
        if ch == "\n":
            return self._line_ended(raw, i)
        if self._line_start == 0 or self._checked == self._line_start or ch in " \t\r":
            return None
        # The first character of a new line with code: its indentation decides, unless
        # the line is inside a triple-quoted string (text, not code).
        self._checked = self._line_start
        if self._triple is not None:
            return None
        indent = _width(raw[self._line_start : i])
        if self._base is None:
            self._base = max(indent, self._cursor_indent)
        if indent < self._base and ch not in _CLOSERS:
            return self._cut()
        self._pending_top = indent == 0 and self._top_level is not None
        return None

    def finish(self, raw: str) -> int | None:
        """The answer ended: a last line may still be a new definition."""
        if self._pending_top and self._starts_definition(raw[self._line_start :]):
            return self._cut()
        return None

    def hold(self, raw: str) -> int:
        """Earliest position a later character could still make this rule cut at."""
        if self._line_start == 0:
            return len(raw)
        if self._code_end is not None and not raw[self._code_end : len(raw)].strip():
            return self._code_end  # blank so far after code: a blank line may end it here
        if self._checked != self._line_start or self._pending_top:
            return self._line_start - 1
        return len(raw)

    def _line_ended(self, raw: str, i: int) -> int | None:
        line = raw[self._line_start : i]
        if line.strip():
            if self._pending_top and self._starts_definition(line):
                return self._cut()
            self._code_end, self._code_line = i, line
            if "'''" in line or '"""' in line or self._triple is not None:
                self._triple = _triple_quote_after(line, self._triple)
        elif self._code_end is not None and self._complete():
            return self._code_end
        self._line_start = i + 1
        self._pending_top = False
        return None

    def _cut(self) -> int:
        # Before the line break that ends the last line of code: blank lines go too.
        return self._code_end if self._code_end is not None else max(self._line_start - 1, 0)

    def _starts_definition(self, line: str) -> bool:
        assert self._top_level is not None
        return self._code_end is not None and self._top_level.match(line) is not None

    def _complete(self) -> bool:
        return (self._triple is None and self._balanced()
                and not self._code_line.rstrip().endswith(_CONTINUES))
