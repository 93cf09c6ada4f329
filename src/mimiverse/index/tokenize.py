"""Code-aware tokens, the same at index and at query time (else lexical search misses).

`getUserName` -> getusername, get, user, name; `user_id` -> user_id, user, id;
`HTTPServerError` -> httpservererror, http, server, error; `src/index/walker.py` -> src,
index, walker, py. Lower-cased; tokens of one character and pure punctuation are
dropped; numbers are kept from two digits on.

Speed: one C-level pass finds the words (for ASCII text a byte translation and a split,
about twice as fast as the regex); each distinct word is split once and the result
cached, since code repeats its identifiers over and over.
"""

from __future__ import annotations

import re

# A word is a run of letters, digits and underscores: `-`, `.`, `/` and `::` separate
# words, which splits kebab-case, paths and dotted names.
_WORD = re.compile(r"\w+")
# camelCase, PascalCase and acronyms (`HTTPServer` -> HTTP, Server), digits apart.
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# For ASCII text `\w` is exactly [A-Za-z0-9_]: every other byte becomes a space, and
# bytes.split() then yields the same words as _WORD.findall.
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NON_WORD_TO_SPACE = bytes(b if b in _WORD_BYTES else 0x20 for b in range(256))

_CACHE: dict[str, tuple[str, ...]] = {}
_CACHE_MAX = 200_000  # distinct words; cleared whole when full (cheap, rare)

# Words that carry no meaning in a question about code; only dropped from queries.
STOPWORDS: frozenset[str] = frozenset(
    {
        "a", "about", "all", "an", "and", "any", "are", "as", "at", "be", "by", "can",
        "code", "do", "does", "for", "from", "function", "functions", "how", "i", "if",
        "implementation", "implemented", "implements", "in", "into", "is", "it", "its",
        "me", "method", "methods", "my", "of", "on", "or", "our", "show", "so", "some",
        "that", "the", "their", "them", "there", "these", "this", "those", "to", "use",
        "used", "uses", "using", "via", "was", "we", "what", "when", "where", "which",
        "who", "why", "will", "with", "you", "your",
    }
)


def _split(word: str) -> tuple[str, ...]:
    core = word.strip("_")  # `__init__` is about "init"; `_private` about "private"
    if len(core) < 2:
        return ()
    whole = core.lower()
    # Most words are one part (`self`, `Error`, `HTTP`): no regex needed for those.
    if core.isascii() and core.isalpha() and (core[1:].islower() or core.isupper()):
        return (whole,)
    out = [whole]
    # camelCase rules are ASCII rules; other scripts split on underscores only.
    parts = _PART.findall(core) if core.isascii() else [p for p in core.split("_") if p]
    if len(parts) > 1:
        out.extend(p.lower() for p in parts if len(p) > 1)
    return tuple(out)


def tokens(text: str) -> list[str]:
    """All tokens of `text` in order, repeats kept (term frequency matters to ranking)."""
    out: list[str] = []
    extend = out.extend
    cache = _CACHE
    get = cache.get
    if text.isascii():
        words = text.encode("ascii").translate(_NON_WORD_TO_SPACE).decode("ascii").split()
    else:
        words = _WORD.findall(text)
    for word in words:
        split = get(word)
        if split is None:
            split = _split(word)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[word] = split
        extend(split)
    return out


def query_tokens(text: str) -> list[str]:
    """Distinct tokens of a query, stopwords removed (unless nothing else is left)."""
    seen: dict[str, None] = dict.fromkeys(tokens(text))
    kept = [t for t in seen if t not in STOPWORDS]
    return kept or list(seen)
