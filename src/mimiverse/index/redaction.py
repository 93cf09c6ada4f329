"""Secrets inside indexed text (keys pasted into code, configs, fixtures) are replaced by
`<redacted:KIND>` before a chunk is stored, so search results and completion prompts
never carry them. Files that are secrets as a whole (.env, key files) are skipped by the
walker instead.

Only formats with a recognisable shape are matched (provider key prefixes, PEM private
key blocks, JWTs), so ordinary code is left alone. Each pattern runs only on text that
holds its literal prefix: a substring test costs far less than a regex scan, and nearly
every chunk holds none, which keeps this off the indexing budget.
"""

from __future__ import annotations

import re

# (kind, literals one of which every match contains, pattern)
_SHAPES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("private-key", ("PRIVATE KEY-----",),
     r"-----BEGIN[A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)"),
    ("aws-access-key", ("AKIA",), r"\bAKIA[0-9A-Z]{16}\b"),
    ("aws-access-key", ("ASIA",), r"\bASIA[0-9A-Z]{16}\b"),
    ("github-token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
     r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),
    ("github-token", ("github_pat_",), r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
    ("gitlab-token", ("glpat-",), r"\bglpat-[A-Za-z0-9_\-]{20,}\b"),
    ("slack-token", ("xox",), r"\bxox[abposr]-[A-Za-z0-9\-]{10,}\b"),
    ("api-key", ("sk-",), r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_\-]{20,}\b"),
    ("stripe-key", ("_live_",), r"\b[rsp]k_live_[A-Za-z0-9]{16,}\b"),
    ("google-api-key", ("AIza",), r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    ("jwt", ("eyJ",), r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
)
_PATTERNS = tuple((kind, literals, re.compile(pattern)) for kind, literals, pattern in _SHAPES)


def redact(text: str) -> tuple[str, int]:
    """`text` with every recognised secret replaced, and how many were replaced."""
    found = 0
    for kind, literals, pattern in _PATTERNS:
        if any(literal in text for literal in literals):
            text, count = pattern.subn(f"<redacted:{kind}>", text)
            found += count
    return text, found
