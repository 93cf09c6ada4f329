"""What the FIM post-processor knows of the suffix's first non-blank line (rules 4 and 5).

Rule 4: an answer line equal to it (at its indentation, where that is known) is the model
running on into the suffix. Rule 5: an answer that ends with its start overlaps it.
Worked out once per answer from the prefix's last line and the suffix; the answer itself
(`raw`) is passed in, as the post-processor owns it.
"""

from __future__ import annotations

from re import compile as re_compile

_MAX_OVERLAP = 256  # only the suffix's first line is compared; long lines are capped
_LEADING_SPACE = re_compile(r"\s*")  # \s is str.isspace(), as str.lstrip() strips


class SuffixLine:
    def __init__(self, prefix_line: str, suffix: str) -> None:
        # Rule 4: the line to look for, and its indentation when we can know it.
        blank_prefix_line = not prefix_line.strip()
        # The cursor's line, when an answer's first line starts at a line start.
        self.head = prefix_line if blank_prefix_line else None
        self._dead_line = -1  # start of the current line once it cannot repeat the suffix
        leading = _LEADING_SPACE.match(suffix)  # no copy of the suffix, unlike lstrip()
        core_at = leading.end() if leading else 0
        self.ws = suffix[:core_at]  # the suffix's whitespace before the line
        newline = suffix.find("\n", core_at)
        line_end = len(suffix) if newline < 0 else newline
        core_line = suffix[core_at:line_end].rstrip()
        self._core = core_line if any(c.isalnum() or c == "_" for c in core_line) else ""
        # The suffix line's indentation in the file; None when the cursor's line has code
        # before it, so the line does not start where the suffix does.
        self.indent: str | None = None
        if "\n" in self.ws:
            self.indent = self.ws.rsplit("\n", 1)[1]
        elif blank_prefix_line:
            self.indent = prefix_line + self.ws
        self._line: str | None = None  # the full line, when its indentation is known
        if self.indent is not None:
            self._line = self.indent + core_line

        # Rule 5.
        self.overlap = suffix[core_at : min(line_end + 1, core_at + _MAX_OVERLAP)]
        self.overlap_line = self.overlap.rstrip("\r\n")
        run = len(self.overlap) - len(self.overlap.lstrip(")]}"))
        self.closer_run = self.overlap[:run]

    # -- rule 4 -------------------------------------------------------------------------

    def repeat_cut(self, raw: str, start: int, end: int) -> int | None:
        """Where to cut when the answer's line [start, end) repeats the suffix's line."""
        line = self._line_text(raw, start, end)
        if line is None or not self._matches(line):
            return None
        indent_end = start
        while indent_end < end and raw[indent_end] in " \t":
            indent_end += 1
        # Keep exactly the whitespace the suffix does not bring itself.
        if raw.endswith(self.ws, 0, indent_end):
            return max(indent_end - len(self.ws), 0)
        if "\n" in self.ws:
            return max(start - 1, 0)
        return indent_end

    def repeat_hold(self, raw: str, end: int) -> int:
        """Earliest position a repeat cut of the line running into `end` could cut at."""
        start = raw.rfind("\n", 0, end) + 1
        if start == self._dead_line:
            return end
        line = self._line_text(raw, start, end)
        if line is None or not self._could_match(line):
            # A line that stopped matching never matches again: skip it from now on,
            # so a long line is not rebuilt on every delta.
            self._dead_line = start
            return end
        # The cut drops at most the suffix's leading whitespace before the line (or the
        # line break), and never goes back past non-blank text.
        earliest = start - max(1, len(self.ws))
        return max(earliest, rstrip_len(raw, start), 0)

    def _line_text(self, raw: str, start: int, end: int) -> str | None:
        """The answer's line [start, end) as it will read in the file, None if the line
        does not start at a line start (the answer continues the prefix's line)."""
        if start == 0:
            if self.head is None:
                return None
            return self.head + raw[:end]
        return raw[start:end]

    def _matches(self, line: str) -> bool:
        if not self._core:
            return False
        line = line.rstrip()
        if self._line is not None:
            return line == self._line
        return line.lstrip() == self._core

    def _could_match(self, line: str) -> bool:
        if not self._core:
            return False
        if self._line is not None:
            return self._line.startswith(line) or line.rstrip() == self._line
        rest = line.lstrip()
        return self._core.startswith(rest) or rest.rstrip() == self._core

    # -- rule 5 -------------------------------------------------------------------------

    def overlap_start(self, text: str, end: int) -> int:
        """Start of the longest tail of text[:end] that begins the suffix's first line."""
        overlap = self.overlap
        if not overlap:
            return end
        i = text.find(overlap[0], max(end - len(overlap), 0), end)
        while i >= 0:
            if overlap.startswith(text[i:end]):
                return i
            i = text.find(overlap[0], i + 1, end)
        return end

    def indent_agrees(self, text: str, start: int) -> bool:
        """An overlap at a line start must sit at the suffix line's indentation."""
        if self.indent is None:
            return True
        line_start = text.rfind("\n", 0, start) + 1
        indent = text[line_start:start]
        if indent.strip(" \t"):
            return True  # mid-line: no indentation to compare
        if line_start == 0:
            if self.head is None:
                return True
            indent = self.head + indent
        return indent == self.indent


def rstrip_len(text: str, end: int) -> int:
    """The length of text[:end] without its trailing whitespace."""
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return end
