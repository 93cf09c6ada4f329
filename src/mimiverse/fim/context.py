"""Repository context for FIM prompts, chosen within a token budget.

Candidates come in priority order: the snippets the client sent (Tabby declarations,
llama.cpp `input_extra`), then the index's best hybrid matches for the code around the
cursor. Matches from the current file that the prompt already shows are dropped (they
would only repeat the prefix, or leak a stale copy of the code being written), as are
duplicates, and at most `max_per_file` come from one file. Each candidate is counted as
the exact text it adds to the prompt, so the budget holds for what the model sees.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mimiverse.fim.templates import ContextFile

# Identifiers of three characters or more: shorter ones (i, x, id) match everywhere.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
# Words every language repeats; as a query they only add noise.
_KEYWORDS = frozenset(
    {
        "and", "as", "assert", "async", "await", "break", "case", "catch", "class", "const",
        "continue", "def", "default", "defer", "del", "elif", "else", "enum", "except",
        "export", "extends", "false", "final", "finally", "for", "from", "func", "function",
        "go", "if", "impl", "implements", "import", "in", "interface", "is", "lambda", "let",
        "match", "mod", "mut", "new", "nil", "none", "None", "not", "null", "or", "package",
        "pass", "private", "protected", "pub", "public", "raise", "return", "self", "static",
        "struct", "super", "switch", "this", "throw", "throws", "true", "True", "False",
        "try", "type", "typeof", "use", "var", "void", "while", "with", "yield", "int",
        "str", "string", "bool", "float", "char", "long", "unsigned", "fn",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a completion is asked, in the terms of an indexed repository."""

    path: str | None  # relative to the repository root, POSIX separators
    line: int  # 1-based line of the cursor in the file
    first_visible: int  # 1-based lines of the current file the prompt shows
    last_visible: int
    visible_text: str  # what the prompt shows of the current file


def cursor_identifiers(
    prefix: str, suffix: str, *, before_lines: int = 12, after_lines: int = 4,
    max_identifiers: int = 8,
) -> list[str]:
    """Identifiers used nearest to the cursor: its own line first, then the lines before
    it (most recent first), then a few after it; keywords dropped, each once."""
    before = prefix.rsplit("\n", before_lines + 1)[-(before_lines + 1):]
    current = before[-1] + suffix.split("\n", 1)[0]
    after = suffix.split("\n", after_lines + 1)[1 : after_lines + 1]
    words: dict[str, None] = {}
    for line in (current, *reversed(before[:-1]), *after):
        for word in _IDENTIFIER.findall(line):
            if word not in _KEYWORDS and len(words) < max_identifiers:
                words.setdefault(word)
    return list(words)


def cursor_query(prefix: str, suffix: str, identifiers: Sequence[str]) -> str:
    """The search query for a cursor: its current line, then the identifiers near it."""
    current = prefix.rsplit("\n", 1)[-1] + suffix.split("\n", 1)[0]
    return " ".join((current.strip(), *identifiers))


def shared_identifiers(text: str, identifiers: Sequence[str]) -> int:
    """How many of `identifiers` occur in `text` as whole identifiers."""
    present = set(_IDENTIFIER.findall(text))
    return sum(1 for word in identifiers if word in present)


def overlaps_visible(cursor: Cursor, path: str, start_line: int, end_line: int,
                     text: str) -> bool:
    """True when a chunk repeats what the prompt already shows of the current file."""
    if path == cursor.path and start_line <= cursor.last_visible \
            and end_line >= cursor.first_visible:
        return True
    body = text.strip()
    return bool(body) and body in cursor.visible_text


def select(
    candidates: Iterable[ContextFile],
    *,
    budget: int,
    count: Callable[[str], int],
    block: Callable[[ContextFile], str],
    max_per_file: int,
    max_items: int,
    overhead: int = 0,
) -> tuple[list[ContextFile], int]:
    """Take candidates in order while they fit; returns them and the tokens they cost.

    `block(item)` is the exact text an item adds to the prompt, `overhead` what adding any
    context at all costs (a repository header). A candidate that does not fit is skipped
    (a smaller later one may still fit); duplicates and files over their quota too.
    """
    chosen: list[ContextFile] = []
    per_file: Counter[str] = Counter()
    seen: set[str] = set()
    used = overhead
    for item in candidates:
        if len(chosen) >= max_items:
            break
        body = item.text.strip()
        if not body or body in seen or per_file[item.path] >= max_per_file:
            continue
        if any(body in kept.text for kept in chosen if kept.path == item.path):
            continue  # already shown inside a larger snippet of the same file
        cost = count(block(item))
        if used + cost > budget:
            continue
        chosen.append(item)
        seen.add(body)
        per_file[item.path] += 1
        used += cost
    return chosen, (used if chosen else 0)


def clip_to_lines(text: str, max_chars: int) -> str:
    """The first whole lines of `text` within `max_chars` (a client snippet may be huge)."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    return text[: cut + 1] if cut > 0 else ""

