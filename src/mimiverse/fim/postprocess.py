"""Turn a raw FIM answer into the text to insert, one delta at a time.

Streaming and non-streaming share `FimPostprocessor`: `postprocess()` is `feed(text)` plus
`finish()`. The processor scans the answer character by character, so how the upstream
splits it into deltas cannot change the result, and it holds back any tail that a later
character could still remove, so nothing it has emitted ever has to be taken back.

Rules (each one only ever shortens the answer):

1. Stop sequences: cut at the first one to complete (family special tokens plus client
   stops); a tail that could still become one is held back.
2. Single line: with the cursor in the middle of a line, cut at the first line break,
   unless the prefix's line ends with an opener (`(`, `[`, `{`, `:`) and the answer starts
   a new, deeper-indented line: then the model is filling in a block.
3. Brackets: a closer that would close a bracket opened in the prefix, which the suffix
   already closes, ends the answer before it (the suffix supplies it).
4. Repeated suffix line: an answer line equal to the suffix's first non-blank line (same
   indentation where known) is the model running on into the suffix: cut before it.
5. Suffix overlap: an answer that ends with the start of the suffix's first non-blank
   line loses that overlap (at least 3 characters, the whole line, its closing-bracket
   run, or the text right before a closer rule 3 cut at).
6. Trailing whitespace is dropped only when the suffix's first line is blank, where it
   cannot change the code; whitespace in the middle is never touched.
7. Block end (multi-line answers, see `blocks`): a line indented less than the block
   being written, a new top-level definition, or a blank line after a complete statement
   ends the answer before it.

Before any rule: when the prompt left out the last space of the cursor's indentation
(`templates.indent_healed`), the answer's leading spaces stand for the cursor's
indentation and are dropped (one from a base model, often all of it from an instruct one).

The prefix's open brackets and the suffix's unmatched closers (rule 3, 5) are only worked
out when the answer first needs them, so an answer that never closes a bracket of the
prefix nor overlaps the suffix costs no scan of either.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from mimiverse.fim.blocks import BlockEnd
from mimiverse.fim.brackets import (
    CLOSED_PREFIX,
    CLOSERS,
    STRAY,
    AnswerBrackets,
    fit_closers,
    quote_at_end,
    scan_brackets,
    unmatched_closers,
)
from mimiverse.fim.suffix_line import SuffixLine, rstrip_len
from mimiverse.fim.templates import indent_healed

_BLOCK_OPENERS = ("(", "[", "{", ":")
_MIN_OVERLAP = 3
_MAX_CLOSERS = 64  # the suffix's unmatched closers we look at


@lru_cache(maxsize=64)
def _stop_table(stop: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, list[str]], str, int]:
    """Stops longest first, grouped by their last character; their first characters; and
    how far back a partial stop can start. Read-only once built."""
    stops = tuple(sorted({s for s in stop if s}, key=len, reverse=True))
    by_last: dict[str, list[str]] = {}
    for s in stops:
        by_last.setdefault(s[-1], []).append(s)
    firsts = "".join(sorted({s[0] for s in stops}))
    return stops, by_last, firsts, max((len(s) for s in stops), default=1) - 1


def is_mid_line(prefix: str, suffix: str) -> bool:
    """True when code both precedes and follows the cursor on its line.

    The prefix side matters too: a cursor in the indentation before code (`    |return`)
    is where whole new lines get inserted, so it is not treated as mid-line.
    """
    return bool(_last_line(prefix).strip()) and bool(_first_line(suffix).strip())


def postprocess(
    prefix: str,
    suffix: str,
    text: str,
    stop: Sequence[str] = (),
    *,
    single_line: bool | None = None,
    language: str | None = None,
) -> str:
    """The whole answer at once; identical to feeding it in any split."""
    processor = FimPostprocessor(prefix, suffix, stop, single_line=single_line,
                                 language=language)
    return processor.feed(text) + processor.finish()


class FimPostprocessor:
    """Streaming post-processor for one FIM answer. See the module docstring for rules."""

    def __init__(
        self,
        prefix: str,
        suffix: str,
        stop: Sequence[str] = (),
        *,
        single_line: bool | None = None,
        language: str | None = None,
    ) -> None:
        self.done = False  # a rule fired: the caller should stop the upstream
        self._closed = False
        self._raw = ""  # everything received (up to the cut, once there is one)
        self._sent = 0  # length of the emitted part of the final text
        self._prefix_tail = prefix[-1:]
        self._healed = indent_healed(prefix)  # the answer's first space is the cursor's

        # Rule 1 (the same few stops come with every request: their table is shared).
        self._stops, self._stops_by_last, self._stop_firsts, self._stop_window = (
            _stop_table(tuple(stop))
        )

        # Rule 2.
        prefix_line = _last_line(prefix)
        auto = single_line is None
        self._single = is_mid_line(prefix, suffix) if auto else bool(single_line)
        self._may_continue = auto and prefix_line.rstrip().endswith(_BLOCK_OPENERS)
        self._prefix_indent = _width(prefix_line[: len(prefix_line) - len(prefix_line.lstrip())])
        self._pending_break: int | None = None  # line break awaiting the next line's indent

        # Rule 3. Only the quote open at the cursor is needed from the start; the
        # prefix's open brackets and the suffix's closers wait until the answer asks.
        self._prefix = prefix
        self._suffix = suffix
        self._start_quote = quote_at_end(prefix)  # the cursor may sit inside a literal
        self._open: list[str] | None = None  # the prefix's unclosed openers, once scanned
        self._closers: list[str] | None = None  # the suffix's unmatched closers, likewise
        self._limit: int | None = None  # how many prefix openers the answer may close
        self._brackets = AnswerBrackets(self._prefix_open, self._start_quote)
        self._cut_closer: str | None = None

        # Rules 4 and 5.
        self._line_start = 0
        self._suffix_line = SuffixLine(prefix_line, suffix)

        # Rule 6.
        self._strip_trailing = not _first_line(suffix).strip()

        # Rule 7: a statement is complete when the answer left no bracket or string open.
        self._block = BlockEnd(prefix, language,
                               lambda: not self._brackets.own and self._brackets.quote is None)

    # -- public -------------------------------------------------------------------------

    def feed(self, text: str) -> str:
        """Take the next delta; return the text that is now safe to emit."""
        if self._closed or not text:
            return ""
        if self._healed:
            # The cursor's line already holds the indentation: whatever the answer starts
            # with stands for it. A base model writes the one space the prompt left out;
            # an instruct model often restates the whole indentation, and kept, it would
            # double it. Spaces may come alone in their own deltas: wait for the code.
            code = text.lstrip(" \t")
            if not code:
                return ""
            self._healed = False
            text = code
        raw = self._raw
        start = len(raw)
        # Grow a local with no other reference, which CPython can extend in place
        # (`self._raw += text` would copy the whole answer on every delta).
        self._raw = ""
        raw += text
        self._raw = raw
        for index in range(start, len(raw)):
            cut = self._scan(index)
            if cut is not None:
                self.done = True
                return self._close(cut)
        return self._emit_safe()

    def finish(self) -> str:
        """The stream ended: return whatever remains to emit."""
        if self._closed:
            return ""
        end = len(self._raw) if self._pending_break is None else self._pending_break
        if not self._single:
            block_end = self._block.finish(self._raw)
            if block_end is not None:
                end = min(end, block_end)
        return self._close(end)

    # -- what rules 3 and 5 know of the prefix and suffix, worked out on first use ------

    def _prefix_open(self) -> list[str]:
        if self._open is None:
            self._open = scan_brackets(self._prefix, None)[0]
        return self._open

    def _suffix_closers(self) -> list[str]:
        if self._closers is None:
            self._closers = unmatched_closers(self._suffix, self._start_quote, _MAX_CLOSERS)
        return self._closers

    def _close_limit(self) -> int:
        """How many of the prefix's openers the answer may close: those inside the one
        the suffix's first unmatched closer closes."""
        if self._limit is None:
            stack = self._prefix_open()
            self._limit = len(stack)
            closers = self._suffix_closers()
            if closers:
                wanted = CLOSERS[closers[0]]
                for depth, opener in enumerate(reversed(stack)):
                    if opener == wanted:
                        self._limit = depth
                        break
        return self._limit

    # -- scanning -----------------------------------------------------------------------

    def _scan(self, i: int) -> int | None:
        """Look at character i; return the cut position if a rule fires there."""
        raw = self._raw
        ch = raw[i]

        # Rule 1: a stop is recognised at its last character; cut at its start.
        for s in self._stops_by_last.get(ch, ()):
            if i + 1 >= len(s) and raw.startswith(s, i + 1 - len(s)):
                return self._with_pending(i + 1 - len(s))

        # Rule 2.
        if self._single:
            cut = self._single_line(i, ch)
            if cut is not None:
                return cut

        # Rule 4, at the end of each line.
        if ch == "\n":
            cut = self._suffix_line.repeat_cut(raw, self._line_start, i)
            self._line_start = i + 1
            if cut is not None:
                return cut

        # Rule 7 (it follows every line, so it learns the block while single-line too).
        cut = self._block.scan(raw, i, ch)
        if cut is not None and not self._single:
            return cut

        # Rule 3.
        return self._track_bracket(i, ch)

    def _single_line(self, i: int, ch: str) -> int | None:
        raw = self._raw
        if self._pending_break is not None:
            if ch.isspace():
                return None
            line_start = max(raw.rfind("\n", 0, i), raw.rfind("\r", 0, i)) + 1
            if _width(raw[line_start:i]) <= self._prefix_indent:
                return self._pending_break
            self._single = False  # a deeper-indented block: multi-line from here on
            self._pending_break = None
        elif ch in "\r\n":
            if self._may_continue and not raw[:i].strip(" \t"):
                self._pending_break = i  # decide once the next line shows its indent
                return None
            return i
        return None

    def _with_pending(self, cut: int) -> int:
        # The stream ends inside a pending single-line decision: no block came, so the
        # answer ends at that line break.
        if self._pending_break is not None:
            return min(cut, self._pending_break)
        return cut

    def _track_bracket(self, i: int, ch: str) -> int | None:
        depth = self._brackets.closed
        effect = self._brackets.step(ch)
        if effect == CLOSED_PREFIX and depth >= self._close_limit():
            self._cut_closer = ch
            return i
        if effect == STRAY and ch in self._suffix_closers():
            # A closer with nothing of ours to close that the suffix supplies anyway.
            self._cut_closer = ch
            return i
        return None

    # -- emitting -----------------------------------------------------------------------

    def _emit_safe(self) -> str:
        raw = self._raw
        # Where the answer could still end: before a partial stop, at a pending line
        # break, or before a line that may turn out to repeat the suffix.
        end = min(len(raw), self._stop_hold())
        if self._pending_break is not None:
            end = min(end, self._pending_break)
        end = min(end, self._suffix_line.repeat_hold(raw, end))
        if not self._single:
            end = min(end, self._block.hold(raw))
        # Rules 5 and 6 remove a tail of the final text; any end >= `end` only has
        # tails that start with a tail of raw[:end], so holding those is enough.
        safe = self._end_rules_hold(end)
        if safe <= self._sent:
            return ""
        out = raw[self._sent : safe]
        self._sent = safe
        return out

    def _stop_hold(self) -> int:
        """Start of the longest tail that is a proper prefix of some stop sequence."""
        raw = self._raw
        if not self._stops:
            return len(raw)
        best = len(raw)
        low = max(best - self._stop_window, 0)
        for first in self._stop_firsts:
            i = raw.find(first, low, best)
            while i >= 0:
                tail = raw[i:]
                if any(s.startswith(tail) for s in self._stops):
                    best = i
                    break
                i = raw.find(first, i + 1, best)
        return best

    def _end_rules_hold(self, end: int) -> int:
        raw = self._raw
        if self._strip_trailing:
            end = rstrip_len(raw, end)
        start = self._suffix_line.overlap_start(raw, end)
        if self._strip_trailing:
            start = rstrip_len(raw, start)
        return start

    def _close(self, cut: int) -> str:
        self._closed = True
        text = self._raw[:cut]
        self._raw = text
        repeat = self._suffix_line.repeat_cut(text, text.rfind("\n") + 1, len(text))
        if repeat is not None:
            text = text[:repeat]
        if self._strip_trailing:
            text = text.rstrip()
        text = self._remove_overlap(text)
        if self._strip_trailing:
            text = text.rstrip()
        out = text[self._sent :]
        self._sent = len(text)
        return out

    def _remove_overlap(self, text: str) -> str:
        overlap = self._suffix_line.overlap
        i = self._suffix_line.overlap_start(text, len(text))
        while i < len(text):
            size = len(text) - i
            if overlap.startswith(text[i:]) and self._overlap_ok(text, i, size):
                return text[:i]
            i += 1
        return text

    def _overlap_ok(self, text: str, start: int, size: int) -> bool:
        line = self._suffix_line
        piece = line.overlap[:size]
        before = text[start - 1] if start > 0 else self._prefix_tail
        if _is_word(piece[0]) and before and _is_word(before):
            return False  # `rebar` ending in the suffix's `bar` is not a repeat
        if not line.indent_agrees(text, start):
            return False  # a whole line at another indentation is new code (rule 4)
        if not (
            size >= _MIN_OVERLAP
            or piece in (line.overlap, line.overlap_line, line.closer_run)
            or (self._cut_closer is not None and line.overlap[size : size + 1] == self._cut_closer)
        ):
            return False
        # Dropping closers re-opens what they closed: only do it when the suffix's own
        # closers then line up with what is open (`foo` + `(1, bar)` before `bar)`), not
        # when the answer's brackets were complete (`print(` + `f(x)` before `)`).
        kept = self._unclosed(text[:start])
        whole = self._unclosed(text)
        closers = self._suffix_closers()
        return fit_closers(kept, closers) >= fit_closers(whole, closers) + len(kept) - len(whole)

    def _unclosed(self, text: str) -> list[str]:
        brackets = AnswerBrackets(self._prefix_open, self._start_quote)
        for ch in text:
            brackets.step(ch)
        return brackets.unclosed()


def _last_line(text: str) -> str:
    return text[text.rfind("\n") + 1 :]


def _first_line(text: str) -> str:
    newline = text.find("\n")
    return text if newline < 0 else text[:newline]


def _width(indent: str) -> int:
    return len(indent.expandtabs(4))


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"
