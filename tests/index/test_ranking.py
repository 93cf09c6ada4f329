import pytest

from mimiverse.index.fusion import Fused
from mimiverse.index.model import StoredChunk
from mimiverse.index.ranking import (
    Priors,
    asks_about_tests,
    boost_lexical,
    cap_per_file,
    demote_tests,
    is_test_path,
    name_match,
    one_per_definition,
)
from mimiverse.index.tokenize import query_tokens


def chunk(cid: int, path: str, symbol: str | None = None, kind: str = "block",
          lines: tuple[int, int] = (1, 5)) -> StoredChunk:
    return StoredChunk(cid, path, lines[0], lines[1], "...", "python", symbol, kind)


CHUNKS = {
    1: chunk(1, "lib/index.js", None, "block"),  # module.exports = { parseConfigFile }
    2: chunk(2, "lib/config.js", "parseConfigFile", "function"),
    3: chunk(3, "lib/cli.js", "main", "function"),  # calls parseConfigFile twice
    4: chunk(4, "httpx/_urls.py", "URL.scheme", "method"),
    5: chunk(5, "httpx/_models.py", "Response.read", "method"),
}


def test_a_query_naming_a_definition_ranks_it_above_references() -> None:
    # BM25 alone: the export line and a caller mention the name more often.
    hits = [(1, 9.0), (3, 8.0), (2, 6.0)]
    boosted = boost_lexical(hits, CHUNKS, query_tokens("parseConfigFile"), Priors())
    assert [cid for cid, _ in boosted] == [2, 1, 3]
    # 6 x (1 + symbol_boost x 1 + path_boost x "config", one of the query's four terms)
    assert boosted[0][1] == pytest.approx(6 * (1 + 1.0 + 0.25 / 4))


def test_name_match_degrees() -> None:
    terms = frozenset(query_tokens("where is parse config file handled"))
    assert name_match(CHUNKS[2], terms) == pytest.approx(1.0)  # every word of the name
    assert name_match(CHUNKS[2], frozenset(query_tokens("parseConfigFile"))) == 1.0
    assert name_match(CHUNKS[2], frozenset(query_tokens("read a config"))) == pytest.approx(
        1 / 3 * 1 / 1)  # one of its three words; that word is all the query has besides
    assert name_match(CHUNKS[1], terms) == 0.0  # no symbol: not a definition
    assert name_match(CHUNKS[4], frozenset(query_tokens("the URL scheme"))) == 1.0
    assert name_match(CHUNKS[4], frozenset()) == 0.0


def test_path_terms_weigh_in_and_zero_boosts_change_nothing() -> None:
    hits = [(5, 10.0), (4, 9.0)]
    terms = query_tokens("urls parsing")
    assert [c for c, _ in boost_lexical(hits, CHUNKS, terms, Priors())] == [4, 5]
    assert boost_lexical(hits, CHUNKS, terms, Priors(0.0, 0.0, 1.0)) == hits
    assert boost_lexical([(99, 1.0)], CHUNKS, terms, Priors()) == []  # deleted meanwhile


@pytest.mark.parametrize(("path", "is_test"), [
    ("tests/test_urls.py", True), ("src/pkg/tests/helpers.py", True), ("test_api.py", True),
    ("conftest.py", True), ("pkg/urls_test.go", True), ("web/cart.spec.ts", True),
    ("web/__tests__/cart.js", True), ("src/test/java/a/CartTest.java", True),
    ("src/pkg/testing.py", False), ("src/pkg/latest.py", False), ("contest/app.py", False),
    ("src/attestation.py", False),
])
def test_test_paths(path: str, is_test: bool) -> None:
    assert is_test_path(path) is is_test


def test_test_files_rank_below_code_unless_the_query_is_about_tests() -> None:
    paths = {1: "tests/test_urls.py", 2: "httpx/_urls.py"}
    terms = query_tokens("parse the url")

    def fused() -> list[Fused]:
        return [Fused(1, 1.0), Fused(2, 0.8)]

    ranked = demote_tests(fused(), paths.__getitem__, terms, 0.7)
    assert [(f.id, round(f.score, 6)) for f in ranked] == [(2, 0.8), (1, 0.7)]
    assert [f.id for f in demote_tests(fused(), paths.__getitem__, terms, 1.0)] == [1, 2]
    about = query_tokens("tests for url parsing")
    assert asks_about_tests(about)
    assert [f.id for f in demote_tests(fused(), paths.__getitem__, about, 0.7)] == [1, 2]


def test_windows_of_one_definition_are_one_result() -> None:
    chunks = {
        1: chunk(1, "a.py", "big", "function", (10, 89)),
        2: chunk(2, "a.py", "big", "function", (87, 160)),  # the next window of it
        3: chunk(3, "a.py", "Thing.host", "method", (200, 203)),  # getter
        4: chunk(4, "a.py", "Thing.host", "method", (205, 208)),  # setter: its own result
        5: chunk(5, "b.py", "big", "function", (10, 20)),  # another file's
    }
    fused = [Fused(i, 1.0 - i / 10) for i in (2, 3, 1, 4, 5)]
    assert [f.id for f in one_per_definition(fused, chunks)] == [2, 3, 4, 5]


def test_cap_per_file_keeps_order_and_none_means_no_cap() -> None:
    fused = [Fused(i, 1.0) for i in range(6)]
    files = {0: "a", 1: "a", 2: "b", 3: "a", 4: "b", 5: "c"}
    assert [f.id for f in cap_per_file(fused, files.__getitem__, 2)] == [0, 1, 2, 4, 5]
    assert [f.id for f in cap_per_file(fused, files.__getitem__, None)] == list(range(6))
