"""What search knows about code beyond BM25 and cosine: names, test files, definitions
split in windows. Shared by both stores (it works on their results), so both rank alike.

- Name fields: BM25 sees a chunk's symbol and path as a few more terms of its text. A
  query that names a definition (`parse_header_links`, "where is header links parsing
  handled") should find that definition before the code that calls or exports it, so
  the lexical score is multiplied by 1 + symbol_boost · (how well the query matches the
  symbol's own name) + path_boost · (the share of the query's terms in the path).
- Test files: a test mentions the names of the code it tests, often more than the code
  itself; unless the query asks about tests, a test chunk's score is multiplied by
  `test_file_weight` (1 turns the prior off).
- Windows: a definition too long for one chunk is several; they are one result (the
  best of them), so its windows do not push other answers down.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from mimiverse.index.fusion import Fused
from mimiverse.index.model import StoredChunk
from mimiverse.index.tokenize import tokens

# Paths of tests and test helpers, in the usual layouts of the languages we chunk.
_TEST_PATH = re.compile(
    r"(?:^|/)(?:tests?|testing|__tests__|spec|specs)/"
    r"|(?:^|/)(?:test_[^/]*|[^/]*_test\.\w+|[^/]*\.(?:test|spec)\.\w+|conftest\.py)$"
    r"|(?:^|/)[^/]*Tests?\.(?:java|kt|cs)$"
)
_ABOUT_TESTS = frozenset({"test", "tests", "testing", "spec", "specs", "fixture", "fixtures",
                          "mock", "mocks", "conftest", "pytest", "unittest"})
_DEFINITIONS = frozenset({"function", "method", "class"})


@dataclass(frozen=True, slots=True)
class Priors:
    symbol_boost: float = 1.0
    path_boost: float = 0.25
    test_file_weight: float = 0.7


def is_test_path(path: str) -> bool:
    return _TEST_PATH.search(path) is not None


def asks_about_tests(query_terms: Sequence[str]) -> bool:
    return any(t in _ABOUT_TESTS for t in query_terms)


@lru_cache(maxsize=65536)
def _name_terms(symbol: str) -> tuple[str, frozenset[str]]:
    """(the whole last name, lower-cased; its word parts) of `Class.method`-like symbols."""
    name = re.split(r"[.:#/]", symbol)[-1]
    found = tokens(name)
    if not found:
        return "", frozenset()
    return found[0], frozenset(found[1:] or found[:1])


@lru_cache(maxsize=65536)
def _path_terms(path: str) -> frozenset[str]:
    return frozenset(tokens(path.rsplit(".", 1)[0]))


def name_match(chunk: StoredChunk, query_terms: frozenset[str]) -> float:
    """1 when the query names the chunk's definition; the share of its name otherwise."""
    if not chunk.symbol or chunk.kind not in _DEFINITIONS or not query_terms:
        return 0.0
    whole, parts = _name_terms(chunk.symbol)
    if whole in query_terms:
        return 1.0
    if not parts:
        return 0.0
    shared = len(parts & query_terms)
    # Both ways: the name's words the query has, and how much of the query they are.
    return (shared / len(parts)) * min(1.0, shared / max(len(query_terms) - 1, 1))


def boost_lexical(
    hits: Sequence[tuple[int, float]], chunks: dict[int, StoredChunk],
    query_terms: Sequence[str], priors: Priors,
) -> list[tuple[int, float]]:
    """The lexical ranking with name and path matches weighed in, best first."""
    terms = frozenset(query_terms)
    out = []
    for cid, score in hits:
        chunk = chunks.get(cid)
        if chunk is None:
            continue
        factor = 1.0 + priors.symbol_boost * name_match(chunk, terms)
        if priors.path_boost:
            factor += priors.path_boost * len(_path_terms(chunk.path) & terms) / len(terms)
        out.append((cid, score * factor))
    out.sort(key=lambda hit: (-hit[1], hit[0]))
    return out


def demote_tests(
    fused: list[Fused], path_of: Callable[[int], str], query_terms: Sequence[str],
    weight: float,
) -> list[Fused]:
    """Test chunks' scores times `weight`, unless the query is about tests."""
    if weight == 1.0 or asks_about_tests(query_terms):
        return fused
    for f in fused:
        if is_test_path(path_of(f.id)):
            f.score *= weight
    return sorted(fused, key=lambda f: -f.score)  # stable: ties keep their order


def one_per_definition(fused: Sequence[Fused], chunks: dict[int, StoredChunk]) -> list[Fused]:
    """Windows of one long definition (same file, symbol and kind, lines that touch or
    overlap) become one result: the best of them."""
    seen: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    kept = []
    for f in fused:
        c = chunks[f.id]
        if c.symbol is not None and c.kind in _DEFINITIONS:
            spans = seen.setdefault((c.path, c.symbol, c.kind), [])
            touching = any(s <= c.end_line + 1 and c.start_line <= e + 1 for s, e in spans)
            spans.append((c.start_line, c.end_line))
            if touching:
                continue
        kept.append(f)
    return kept


def cap_per_file(items: Sequence[Fused], path_of: Callable[[int], str],
                 limit: int | None) -> list[Fused]:
    """At most `limit` items per file (None: no cap), in order."""
    if limit is None:
        return list(items)
    seen: dict[str, int] = {}
    kept = []
    for item in items:
        path = path_of(item.id)
        if seen.get(path, 0) < limit:
            seen[path] = seen.get(path, 0) + 1
            kept.append(item)
    return kept
