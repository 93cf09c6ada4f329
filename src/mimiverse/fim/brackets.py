"""Brackets and string literals as the FIM post-processor reads them: the prefix's open
brackets, the suffix's unmatched closers, and the answer's own, quote-aware (rule 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from re import compile as re_compile

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {")": "(", "]": "[", "}": "{"}
QUOTES = frozenset("'\"`")
# Characters that matter to the bracket scan; everything else is skipped in C.
_BRACKET_SCAN = re_compile(r"[()\[\]{}'\"`\\\n]")


def pop_to(stack: list[str], opener: str) -> None:
    # Pop back to the matching opener if there is one; a stray closer changes nothing.
    for depth in range(len(stack) - 1, -1, -1):
        if stack[depth] == opener:
            del stack[depth:]
            return


class LiteralAwareBrackets:
    """The brackets of `text[start:]` outside string literals, in order; `quote` is the
    literal still open where the text ends (quotes never span lines here, as in most
    code, except after a backslash)."""

    def __init__(self, text: str, quote: str | None, start: int = 0) -> None:
        self.text = text
        self.quote = quote
        self.start = start

    def __iter__(self) -> Iterator[str]:
        skip = -1
        for match in _BRACKET_SCAN.finditer(self.text, self.start):
            i = match.start()
            ch = self.text[i]
            if i == skip:
                continue
            if ch == "\n":
                self.quote = None
            elif self.quote is not None:
                if ch == "\\":
                    skip = i + 1
                elif ch == self.quote:
                    self.quote = None
            elif ch in QUOTES:
                self.quote = ch
            elif ch in OPENERS or ch in CLOSERS:
                yield ch


def scan_brackets(text: str, quote: str | None) -> tuple[list[str], str | None]:
    """Unclosed openers of `text` (innermost last) and the quote open at its end."""
    stack: list[str] = []
    brackets = LiteralAwareBrackets(text, quote)
    for ch in brackets:
        if ch in OPENERS:
            stack.append(ch)
        else:
            pop_to(stack, CLOSERS[ch])
    return stack, brackets.quote


def quote_at_end(text: str) -> str | None:
    """The quote `scan_brackets(text, None)` leaves open, from the last line alone: a line
    break ends every literal unless a backslash escapes it."""
    start = text.rfind("\n") + 1
    if start >= 2 and text[start - 2] == "\\":
        return scan_brackets(text, None)[1]  # the break may be escaped: read it all
    brackets = LiteralAwareBrackets(text, None, start)
    for _ in brackets:
        pass
    return brackets.quote


def unmatched_closers(text: str, quote: str | None, limit: int) -> list[str]:
    """The first `limit` closers in `text` that close something opened before it."""
    found: list[str] = []
    stack: list[str] = []
    for ch in LiteralAwareBrackets(text, quote):
        if ch in OPENERS:
            stack.append(ch)
        elif CLOSERS[ch] in stack:
            pop_to(stack, CLOSERS[ch])
        else:
            found.append(ch)
            if len(found) >= limit:
                break
    return found


def fit_closers(unclosed: list[str], closers: list[str]) -> int:
    """How many of the innermost open brackets the closers close, in order."""
    count = 0
    for opener, closer in zip(reversed(unclosed), closers, strict=False):
        if CLOSERS[closer] != opener:
            break
        count += 1
    return count


CLOSED_PREFIX = 1  # the character closed a bracket opened in the prefix
STRAY = 2  # a closer with nothing open in the answer or prefix to close


class AnswerBrackets:
    """Brackets of the answer, on top of the prefix's unclosed ones (asked for only when
    the answer closes more than it opened); quote-aware."""

    def __init__(self, prefix_open: Callable[[], list[str]], quote: str | None) -> None:
        self.prefix_open = prefix_open
        self.closed = 0  # prefix openers closed by the answer, innermost first
        self.own: list[str] = []
        self.quote = quote
        self.escape = False

    def step(self, ch: str) -> int:
        if ch == "\n":
            # Quotes never span lines here: a stray apostrophe spoils one line at most.
            self.quote = None
            self.escape = False
            return 0
        if self.quote is not None:
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == self.quote:
                self.quote = None
            return 0
        if ch in QUOTES:
            self.quote = ch
        elif ch in OPENERS:
            self.own.append(ch)
        elif ch in CLOSERS:
            opener = CLOSERS[ch]
            if self.own:
                pop_to(self.own, opener)
                return 0
            depth = self.closed
            prefix_open = self.prefix_open()
            if depth < len(prefix_open) and prefix_open[-1 - depth] == opener:
                self.closed += 1
                return CLOSED_PREFIX
            return STRAY
        return 0

    def unclosed(self) -> list[str]:
        """Everything open after prefix + answer, innermost last."""
        prefix_open = self.prefix_open()
        return prefix_open[: len(prefix_open) - self.closed] + self.own
