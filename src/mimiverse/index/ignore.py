"""Ignore files (.gitignore, .mimiverseignore, .git/info/exclude) and what they decide.

A repository writes these patterns, so they are hostile input: a pattern such as
`*a*a*a*a*a*a*a*b` makes a backtracking regex engine take exponential time on a long name
(22 s for 60 characters, and the thread holding the GIL stalls the server's event loop).
Patterns are therefore matched by RE2 (pathspec's `re2` backend over google-re2), whose
cost is linear in the path's length whatever the patterns are.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mimiverse.index")


class Rules:
    """The patterns of one ignore file, matched relative to the directory holding it."""

    __slots__ = ("_spec", "prefix")

    def __init__(self, prefix: str, lines: list[str]) -> None:
        # Imported here: indexing workers only read files, and start faster without it.
        import pathspec

        self.prefix = prefix  # "" at the root, else "sub/dir/"
        # backend="re2", not "best": a missing google-re2 must fail loudly, never fall back
        # to the backtracking engine.
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines, backend="re2")

    def __bool__(self) -> bool:
        return any(p.include is not None for p in self._spec.patterns)

    def decide(self, rel: str) -> bool | None:
        """True: ignored, False: re-included by a negation, None: no pattern matches."""
        return self._spec.check_file(rel[len(self.prefix) :]).include


# Highest priority first: .mimiverseignore, the deepest .gitignore ... the root's, exclude.
Stack = tuple[Rules, ...]


def is_ignored(stack: Stack, rel: str, is_dir: bool) -> bool:
    path = rel + "/" if is_dir else rel
    for rules in stack:
        decision = rules.decide(path)
        if decision is not None:
            return decision
    return False


def load_rules(path: str, prefix: str) -> Rules | None:
    """The rules of the ignore file at `path`, or None when it is missing or empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    try:
        rules = Rules(prefix, lines)
    except Exception as exc:  # a pattern RE2 cannot compile (too large): skip the file
        log.warning("ignore file %s skipped: %s", path, exc)
        return None
    return rules if rules else None
