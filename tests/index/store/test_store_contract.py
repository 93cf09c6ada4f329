"""The IndexStore contract, run against SQLite and PostgreSQL with the same expectations."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

import mimiverse.index.store as store_package
from mimiverse.errors import CodeIndexError, IndexLocked
from mimiverse.index.model import Chunk, FileState, IndexTerms, SearchFilter, StoredChunk
from mimiverse.index.store import compiled_glob, glob_regex
from mimiverse.index.store.base import IndexStore, RepoStats
from mimiverse.index.tokenize import tokens
from tests.index.store.conftest import Backend

ROOT = "/repos/alpha"
OTHER_ROOT = "/repos/beta"
ANY = SearchFilter()


def state(path: str, sha: str = "sha-1", language: str | None = None) -> FileState:
    return FileState(path, size=100, mtime_ns=1_700_000_000_123_456_789, sha256=sha,
                     language=language)


def put(
    store: IndexStore, repo: int, path: str, *texts: str,
    sha: str = "sha-1", language: str | None = None,
) -> None:
    """Replace one file with one chunk per text (lines 1, 2, ...)."""
    chunks = [Chunk(path, n, n, text, language) for n, text in enumerate(texts, start=1)]
    store.replace_files(repo, [(state(path, sha, language), chunks)])


def ids(store: IndexStore, repo: int) -> dict[str, int]:
    """Chunk id by text, for chunks without vectors."""
    return {text: cid for cid, text in store.pending_embeddings(repo, 10_000)}


def paths(store: IndexStore, hits: Sequence[tuple[int, float]]) -> set[str]:
    found = store.chunks([cid for cid, _ in hits])
    return {found[cid].path for cid, _ in hits}


def ranked_ids(hits: Sequence[tuple[int, float]]) -> list[int]:
    return [cid for cid, _ in hits]


def ranked_paths(store: IndexStore, hits: Sequence[tuple[int, float]]) -> list[str]:
    found = store.chunks([cid for cid, _ in hits])
    return [found[cid].path for cid, _ in hits]


@pytest.fixture
def repo(store: IndexStore) -> int:
    return store.repo_id(ROOT)


# -- repositories, files, chunks ------------------------------------------------------


def test_repo_id_is_stable_and_distinct(store: IndexStore) -> None:
    a = store.repo_id(ROOT)
    b = store.repo_id(OTHER_ROOT)
    assert a != b
    assert store.repo_id(ROOT) == a
    assert store.stats(a) == RepoStats(0, 0, 0, None, None)


def test_file_states_round_trip(store: IndexStore, repo: int) -> None:
    py = FileState("src/app.py", 1234, 1_700_000_000_999_999_999, "ab" * 32, "python")
    txt = FileState("notes.txt", 0, 5, "cd" * 32, None)
    store.replace_files(repo, [(py, [Chunk("src/app.py", 1, 3, "print(1)", "python")]),
                               (txt, [])])
    assert store.file_states(repo) == {"src/app.py": py, "notes.txt": txt}
    changed = FileState("src/app.py", 99, 7, "ef" * 32, "python")
    store.replace_files(repo, [(changed, [])])
    assert store.file_states(repo) == {"src/app.py": changed, "notes.txt": txt}
    assert store.check_integrity(repo) == []


def test_chunks_are_returned_exactly(store: IndexStore, repo: int) -> None:
    store.replace_files(repo, [(state("src/p.py", language="python"), [
        Chunk("src/p.py", 1, 9, "class Parser:\n    pass", "python", "Parser", "class"),
        Chunk("src/p.py", 10, 12, "def parse(self): ...", "python", "Parser.parse", "method"),
    ])])
    by_text = ids(store, repo)
    cls, method = by_text["class Parser:\n    pass"], by_text["def parse(self): ..."]
    assert store.chunks([method, cls, 999_999]) == {
        cls: StoredChunk(cls, "src/p.py", 1, 9, "class Parser:\n    pass", "python", "Parser",
                         "class"),
        method: StoredChunk(method, "src/p.py", 10, 12, "def parse(self): ...", "python",
                            "Parser.parse", "method"),
    }
    assert store.chunks([]) == {}


def test_replace_drops_old_chunks_and_their_vectors(store: IndexStore, repo: int) -> None:
    put(store, repo, "a.py", "old_alpha body", "old_beta body")
    put(store, repo, "b.py", "untouched body")
    old = ids(store, repo)
    store.set_embedding_model(repo, "m", 2)
    store.store_embeddings(repo, [(cid, [1.0, 0.0]) for cid in old.values()])

    put(store, repo, "a.py", "fresh_gamma body", sha="sha-2")
    new = ids(store, repo)
    assert list(new) == ["fresh_gamma body"]  # the only chunk without a vector
    assert store.chunks([old["old_alpha body"], old["old_beta body"]]) == {}
    assert store.search_lexical(repo, ["old_alpha"], 10, ANY) == []
    assert ranked_ids(store.search_lexical(repo, ["fresh_gamma"], 10, ANY)) == [
        new["fresh_gamma body"]
    ]
    assert ranked_ids(store.search_vector(repo, [1.0, 0.0], 10, ANY)) == [old["untouched body"]]
    assert store.stats(repo) == RepoStats(2, 2, 1, "m", 2)
    assert store.check_integrity(repo) == []


def test_replace_several_files_in_one_call(store: IndexStore, repo: int) -> None:
    store.replace_files(repo, [
        (state("x.py"), [Chunk("x.py", 1, 1, "xray one"), Chunk("x.py", 2, 2, "xray two")]),
        (state("y.py"), [Chunk("y.py", 1, 1, "yankee")]),
    ])
    assert store.stats(repo) == RepoStats(2, 3, 3, None, None)
    with pytest.raises(ValueError, match=r"y\.py"):
        store.replace_files(repo, [(state("x.py"), [Chunk("y.py", 1, 1, "wrong file")])])
    assert store.stats(repo) == RepoStats(2, 3, 3, None, None)


def test_the_last_of_a_file_given_twice_wins(store: IndexStore, repo: int) -> None:
    store.replace_files(repo, [
        (state("x.py", "v1"), [Chunk("x.py", 1, 1, "first_version")]),
        (state("y.py"), [Chunk("y.py", 1, 1, "yankee")]),
        (state("x.py", "v2"), [Chunk("x.py", 1, 1, "second_version"), Chunk("x.py", 2, 2, "b")]),
    ])
    assert store.file_states(repo)["x.py"].sha256 == "v2"
    assert store.search_lexical(repo, ["first_version"], 10, ANY) == []
    assert paths(store, store.search_lexical(repo, ["second_version"], 10, ANY)) == {"x.py"}
    assert store.stats(repo) == RepoStats(2, 3, 3, None, None)
    assert store.check_integrity(repo) == []


def test_terms_computed_ahead_are_indexed_as_given(store: IndexStore, repo: int) -> None:
    # Indexing workers tokenise chunks themselves: the store takes their terms as they are.
    assert store.tokenizer() is tokens
    ahead = IndexTerms.of(["zulu", "zulu", "yankee"])
    store.replace_files(repo, [
        (state("a.py"), [Chunk("a.py", 1, 1, "unrelated words", terms=ahead)]),
        (state("b.py"), [Chunk("b.py", 1, 1, "zulu tokenised here")]),
    ])
    assert paths(store, store.search_lexical(repo, ["unrelated"], 10, ANY)) == set()
    assert paths(store, store.search_lexical(repo, ["yankee"], 10, ANY)) == {"a.py"}
    # Term frequency counts: two zulus (and a shorter chunk) rank first.
    zulu = store.search_lexical(repo, ["zulu"], 10, ANY)
    assert ranked_paths(store, zulu) == ["a.py", "b.py"]
    assert store.check_integrity(repo) == []
    # Terms travel through JSON and SQL text: non-ASCII and `$` come back as they went.
    odd = ["straße", "日本語", "$scope", "naïve_ünïcode"]
    store.replace_files(repo, [(state("c.py"), [Chunk("c.py", 1, 1, "x",
                                                      terms=IndexTerms.of(odd))])])
    for term in odd:
        assert paths(store, store.search_lexical(repo, [term], 10, ANY)) == {"c.py"}, term
    store.delete_files(repo, ["c.py"])
    assert store.search_lexical(repo, ["日本語"], 10, ANY) == []
    assert store.check_integrity(repo) == []


def test_many_files_replaced_and_deleted_keep_the_statistics(
    store: IndexStore, repo: int
) -> None:
    files = [(state(f"f{i}.py"), [Chunk(f"f{i}.py", k, k, f"shared term_{k} file_{i} x{i % 3}")
                                  for k in range(1, 4)]) for i in range(30)]
    store.replace_files(repo, files)
    store.replace_files(repo, [(state(f"f{i}.py", "sha-2"), [Chunk(f"f{i}.py", 1, 1, "shared new")])
                               for i in range(0, 30, 2)])
    store.delete_files(repo, [f"f{i}.py" for i in range(0, 30, 3)])
    assert store.stats(repo) == RepoStats(20, 10 * 1 + 10 * 3, 40, None, None)
    assert len(store.search_lexical(repo, ["shared"], 100, ANY)) == 40
    assert store.check_integrity(repo) == []
    store.delete_files(repo, [f"f{i}.py" for i in range(30)])
    assert store.stats(repo) == RepoStats(0, 0, 0, None, None)
    assert store.check_integrity(repo) == []


def test_refresh_file_states_keeps_chunks(store: IndexStore, repo: int) -> None:
    put(store, repo, "a.py", "alpha body", sha="same")
    before = ids(store, repo)
    touched = FileState("a.py", 555, 42, "same", None)
    store.refresh_file_states(repo, [touched, FileState("gone.py", 1, 1, "x", None)])
    assert store.file_states(repo) == {"a.py": touched}
    assert ids(store, repo) == before
    # A different hash is a change, not a touch: refresh leaves that file alone.
    store.refresh_file_states(repo, [FileState("a.py", 1, 1, "other", None)])
    assert store.file_states(repo) == {"a.py": touched}


def test_delete_files(store: IndexStore, repo: int) -> None:
    put(store, repo, "a.py", "alpha keep")
    put(store, repo, "b.py", "bravo gone", "bravo also")
    doomed = [ids(store, repo)["bravo gone"], ids(store, repo)["bravo also"]]
    store.set_embedding_model(repo, "m", 2)
    store.store_embeddings(repo, [(doomed[0], [0.0, 1.0])])
    store.delete_files(repo, ["b.py", "never-indexed.py"])
    assert set(store.file_states(repo)) == {"a.py"}
    assert store.chunks(doomed) == {}
    assert store.search_lexical(repo, ["bravo"], 10, ANY) == []
    assert store.search_vector(repo, [0.0, 1.0], 10, ANY) == []
    assert store.stats(repo) == RepoStats(1, 1, 1, "m", 2)
    assert store.check_integrity(repo) == []


# -- lexical search ---------------------------------------------------------------------

LEXICAL_CORPUS = {
    "docs/f1.txt": "gamma gamma gamma filler",
    "docs/f2.txt": "gamma filler filler filler",
    "docs/f3.txt": "gamma",
    "docs/f4.txt": "omega filler",
    "docs/f5.txt": "delta filler",
    "docs/f6.txt": "delta filler filler",
    "docs/f7.txt": "delta filler filler filler",
    "docs/f8.txt": "unrelated words here",
}


@pytest.fixture
def corpus(store: IndexStore, repo: int) -> dict[str, int]:
    """Chunk id by path, one chunk per file."""
    store.replace_files(repo, [
        (state(path), [Chunk(path, 1, 1, text)]) for path, text in LEXICAL_CORPUS.items()
    ])
    by_text = ids(store, repo)
    return {path: by_text[text] for path, text in LEXICAL_CORPUS.items()}


def test_lexical_term_frequency_and_length(
    store: IndexStore, repo: int, corpus: dict[str, int]
) -> None:
    hits = store.search_lexical(repo, ["gamma"], 10, ANY)
    # Three occurrences beat one; of the single occurrences the shorter chunk wins.
    assert ranked_ids(hits) == [corpus["docs/f1.txt"], corpus["docs/f3.txt"],
                                corpus["docs/f2.txt"]]
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert len(set(scores)) == 3


def test_lexical_rarer_term_wins(store: IndexStore, repo: int, corpus: dict[str, int]) -> None:
    hits = store.search_lexical(repo, ["delta", "omega"], 10, ANY)
    # omega is in one chunk, delta in three: same length, the rare term ranks first.
    assert ranked_ids(hits) == [corpus[f"docs/f{n}.txt"] for n in (4, 5, 6, 7)]
    assert store.search_lexical(repo, ["delta", "omega"], 2, ANY) == hits[:2]


def test_common_terms_weigh_but_do_not_select(
    store: IndexStore, repo: int, corpus: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    full = dict(store.search_lexical(repo, ["omega", "filler"], 10, ANY))
    # Now a term in more than 2 of the 8 chunks is common: filler (6) and gamma (3) are.
    monkeypatch.setattr(store_package, "SELECTIVE_MIN_DF", 1)
    monkeypatch.setattr(store_package, "SELECTIVE_FRACTION", 0.3)
    (only,) = store.search_lexical(repo, ["omega", "filler"], 10, ANY)
    # The chunk omega selects keeps its whole score, filler's weight included.
    assert only == (corpus["docs/f4.txt"], pytest.approx(full[corpus["docs/f4.txt"]]))
    assert ranked_ids(store.search_lexical(repo, ["gamma", "omega"], 10, ANY)) == [
        corpus["docs/f4.txt"]
    ]
    # Only common terms: the rarest one selects.
    assert ranked_ids(store.search_lexical(repo, ["gamma", "filler"], 10, ANY))[:1] == [
        corpus["docs/f1.txt"]
    ]
    assert len(store.search_lexical(repo, ["gamma", "filler"], 10, ANY)) == 3


def test_lexical_finds_path_and_symbol_names(store: IndexStore, repo: int) -> None:
    store.replace_files(repo, [(state("src/config_loader.py"), [
        Chunk("src/config_loader.py", 1, 4, "return 42", symbol="parseSettings",
              kind="function"),
    ])])
    (cid,) = ids(store, repo).values()
    for terms in (["config_loader"], ["loader"], ["parsesettings"], ["settings"]):
        assert ranked_ids(store.search_lexical(repo, terms, 10, ANY)) == [cid], terms


def test_lexical_edge_cases(store: IndexStore, repo: int, corpus: dict[str, int]) -> None:
    assert store.search_lexical(repo, [], 10, ANY) == []
    assert store.search_lexical(repo, ["nowhere"], 10, ANY) == []
    assert store.search_lexical(repo, ["gamma"], 0, ANY) == []
    # Query syntax of either engine is inert: terms are matched literally.
    for term in ['"', "'", "a OR b", "x:*", "!&|", "NEAR(", "\\"]:
        assert store.search_lexical(repo, [term], 10, ANY) == []
    assert ranked_ids(store.search_lexical(repo, ["gamma", "gamma"], 10, ANY)) == ranked_ids(
        store.search_lexical(repo, ["gamma"], 10, ANY)
    )


# Text whose case folding, normalisation or character classes differ between Unicode
# implementations: the micro sign (which unicode61 folds to Greek mu), final sigma,
# sharp s, dotted capital I, ligatures, combining accents, full-width letters, super-
# and subscript digits, the Kelvin sign, a connector punctuation mark.
NON_ASCII_TEXTS = [
    "timeout_µs = 5  # µs",
    "ΣΑΣ σας Σίσυφος",
    "Straße strasse STRASSE",
    "İstanbul istanbul ISTANBUL",
    "ﬁle_name ﬂow file",
    "cafe\u0301 café CAFÉ",
    "ＡＢＣ ｄｅｆ abc",
    "x² h₂o ½",
    "200K ohm",
    "tie‿break naïve_Ünïcode",
]


def test_non_ascii_terms_agree_with_the_full_text_index(store: IndexStore, repo: int) -> None:
    """The store's own document frequencies (which choose BM25's candidates) count the
    terms exactly as its full-text index holds them, and every term finds its chunks."""
    put(store, repo, "unicode.txt", *NON_ASCII_TEXTS)
    assert store.check_integrity(repo) == []
    by_text = ids(store, repo)
    chunks_of: dict[str, set[int]] = {}
    for text, cid in by_text.items():
        for term in tokens(text) + tokens("unicode.txt"):
            chunks_of.setdefault(term, set()).add(cid)
    assert "µs" in chunks_of and "σας" in chunks_of and "i\u0307stanbul" in chunks_of
    for term, expected in chunks_of.items():
        assert set(ranked_ids(store.search_lexical(repo, [term], 100, ANY))) == expected, term
    put(store, repo, "unicode.txt", *NON_ASCII_TEXTS[::2])
    assert store.check_integrity(repo) == []
    store.delete_files(repo, ["unicode.txt"])
    assert store.check_integrity(repo) == []


# -- filters ----------------------------------------------------------------------------

FILTER_FILES = {
    "src/app.py": "python",
    "src/util/helpers.py": "python",
    "tests/test_app.py": "python",
    "test_root.py": "python",
    "lib/src/other.py": "python",
    "src/readme.md": "markdown",
    "src/main.rs": "rust",
}

FILTER_CASES = [
    (SearchFilter(path_glob="src/*.py"), {"src/app.py"}),
    (SearchFilter(path_glob="**/test_*.py"), {"tests/test_app.py", "test_root.py"}),
    (SearchFilter(path_glob="src/**/*.py"), {"src/app.py", "src/util/helpers.py"}),
    (SearchFilter(path_glob="*.md"), {"src/readme.md"}),
    (SearchFilter(path_glob="/src/"), {"src/app.py", "src/util/helpers.py", "src/readme.md",
                                       "src/main.rs"}),
    (SearchFilter(path_glob="src/"), {"src/app.py", "src/util/helpers.py", "src/readme.md",
                                      "src/main.rs", "lib/src/other.py"}),
    (SearchFilter(language="markdown"), {"src/readme.md"}),
    (SearchFilter(path_glob="src/**", language="python"), {"src/app.py", "src/util/helpers.py"}),
    (SearchFilter(path_glob="*.[mr][ds]"), {"src/readme.md", "src/main.rs"}),
    (SearchFilter(language="cobol"), set()),
    (SearchFilter(path_glob="nothing/*"), set()),
]


@pytest.fixture
def filter_corpus(store: IndexStore, repo: int) -> None:
    store.replace_files(repo, [
        (state(path, language=lang), [Chunk(path, 1, 1, f"needle in {path}", lang)])
        for path, lang in FILTER_FILES.items()
    ])
    store.set_embedding_model(repo, "m", 3)
    store.store_embeddings(repo, [(cid, [1.0, 0.5, 0.25]) for cid in ids(store, repo).values()])


@pytest.mark.parametrize(("where", "expected"), FILTER_CASES)
@pytest.mark.usefixtures("filter_corpus")
def test_filters(store: IndexStore, repo: int, where: SearchFilter, expected: set[str]) -> None:
    assert paths(store, store.search_lexical(repo, ["needle"], 100, where)) == expected
    assert paths(store, store.search_vector(repo, [1.0, 0.5, 0.25], 100, where)) == expected


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("src/*.py", "src/app.py", True),
        ("src/*.py", "src/util/app.py", False),
        ("src/*.py", "lib/src/app.py", False),
        ("**/test_*.py", "test_x.py", True),
        ("**/test_*.py", "a/b/test_x.py", True),
        ("**/test_*.py", "a/b/x_test.py", False),
        ("src/**", "src/a/b/c", True),
        ("src/**/*.py", "src/a.py", True),
        ("*.py", "deep/down/x.py", True),
        ("/top.py", "top.py", True),
        ("/top.py", "sub/top.py", False),
        ("./a?c.txt", "abc.txt", True),
        ("a?c.txt", "a/c.txt", False),
        ("[!a]*.py", "b.py", True),
        ("[!a]*.py", "a.py", False),
        ("file[.]py", "file.py", True),
        ("a+b (1).txt", "a+b (1).txt", True),
        ("a+b (1).txt", "aab (1).txt", False),
        ("weird[", "weird[", True),
        ("back\\slash", "back\\slash", True),
    ],
)
def test_glob_semantics(glob: str, path: str, matches: bool) -> None:
    assert (compiled_glob(glob).search(path) is not None) is matches, glob_regex(glob)


# -- vectors ----------------------------------------------------------------------------


@pytest.fixture
def vectors(store: IndexStore, repo: int) -> list[int]:
    """Four chunks with hand-made vectors (some not unit length), ids in text order."""
    put(store, repo, "v.py", "east", "north_east", "north", "west")
    by_text = ids(store, repo)
    order = [by_text[t] for t in ("east", "north_east", "north", "west")]
    assert store.set_embedding_model(repo, "tiny-embed", 4) is False
    store.store_embeddings(repo, [
        (order[0], [2.0, 0.0, 0.0, 0.0]),
        (order[1], [0.8, 0.6, 0.0, 0.0]),
        (order[2], [0.0, 3.0, 0.0, 0.0]),
        (order[3], [-1.0, 0.0, 0.0, 0.0]),
    ])
    return order


def test_vector_ranking_is_exact(store: IndexStore, repo: int, vectors: list[int]) -> None:
    hits = store.search_vector(repo, [5.0, 0.0, 0.0, 0.0], 10, ANY)
    assert ranked_ids(hits) == vectors
    assert [score for _, score in hits] == pytest.approx([1.0, 0.8, 0.0, -1.0], abs=1e-6)
    assert store.search_vector(repo, [0.0, 1.0, 0.0, 0.0], 2, ANY) == [
        (vectors[2], pytest.approx(1.0, abs=1e-6)), (vectors[1], pytest.approx(0.6, abs=1e-6)),
    ]
    assert store.search_vector(repo, [1.0, 0.0, 0.0, 0.0], 0, ANY) == []


def test_vector_dimension_is_checked(store: IndexStore, repo: int, vectors: list[int]) -> None:
    with pytest.raises(CodeIndexError, match="4-dimensional"):
        store.search_vector(repo, [1.0, 0.0], 10, ANY)
    with pytest.raises(CodeIndexError, match="4-dimensional"):
        store.store_embeddings(repo, [(vectors[0], [1.0, 0.0, 0.0])])
    assert store.check_integrity(repo) == []


def test_store_embeddings_needs_a_model(store: IndexStore, repo: int) -> None:
    put(store, repo, "a.py", "alpha")
    with pytest.raises(CodeIndexError, match="set_embedding_model"):
        store.store_embeddings(repo, [(ids(store, repo)["alpha"], [1.0])])
    assert store.search_vector(repo, [1.0], 10, ANY) == []


def test_restoring_a_vector_replaces_it(store: IndexStore, repo: int, vectors: list[int]) -> None:
    store.store_embeddings(repo, [(vectors[3], [1.0, 0.0, 0.0, 0.0])])
    hits = store.search_vector(repo, [1.0, 0.0, 0.0, 0.0], 10, ANY)
    assert [round(score, 4) for _, score in hits] == [1.0, 1.0, 0.8, 0.0]
    assert set(ranked_ids(hits[:2])) == {vectors[0], vectors[3]}
    assert store.stats(repo) == RepoStats(1, 4, 0, "tiny-embed", 4)


def test_pending_embeddings_shrink(store: IndexStore, repo: int) -> None:
    put(store, repo, "a.py", "one", "two", "three")
    pending = store.pending_embeddings(repo, 10)
    assert [text for _, text in pending] == ["one", "two", "three"]
    assert store.pending_embeddings(repo, 2) == pending[:2]
    store.set_embedding_model(repo, "m", 2)
    store.store_embeddings(repo, [(pending[0][0], [1.0, 0.0]), (pending[2][0], [0.0, 1.0])])
    assert store.pending_embeddings(repo, 10) == [pending[1]]
    assert store.stats(repo).pending_embeddings == 1
    store.store_embeddings(repo, [(pending[1][0], [1.0, 1.0])])
    assert store.pending_embeddings(repo, 10) == []
    assert store.stats(repo) == RepoStats(1, 3, 0, "m", 2)


def test_vectors_of_deleted_chunks_are_ignored(store: IndexStore, repo: int) -> None:
    put(store, repo, "a.py", "first version")
    (old,) = ids(store, repo).values()
    put(store, repo, "a.py", "second version", sha="sha-2")
    store.set_embedding_model(repo, "m", 2)
    store.store_embeddings(repo, [(old, [1.0, 0.0])])  # embedded while it was replaced
    assert [text for _, text in store.pending_embeddings(repo, 10)] == ["second version"]
    assert store.search_vector(repo, [1.0, 0.0], 10, ANY) == []
    assert store.check_integrity(repo) == []


def test_model_change_drops_vectors(store: IndexStore, repo: int, vectors: list[int]) -> None:
    assert store.set_embedding_model(repo, "tiny-embed", 4) is False  # the same: kept
    assert len(store.search_vector(repo, [1.0, 0.0, 0.0, 0.0], 10, ANY)) == 4
    assert store.set_embedding_model(repo, "other-embed", 4) is True
    assert store.search_vector(repo, [1.0, 0.0, 0.0, 0.0], 10, ANY) == []
    assert [cid for cid, _ in store.pending_embeddings(repo, 10)] == vectors
    assert store.stats(repo) == RepoStats(1, 4, 4, "other-embed", 4)
    assert store.set_embedding_model(repo, "other-embed", 8) is True  # same name, new size
    store.store_embeddings(repo, [(vectors[0], [1.0] * 8)])
    assert ranked_ids(store.search_vector(repo, [1.0] * 8, 10, ANY)) == [vectors[0]]
    assert store.check_integrity(repo) == []


def test_writes_through_another_store_are_seen(backend: Backend, store: IndexStore) -> None:
    repo = store.repo_id(ROOT)
    put(store, repo, "a.py", "alpha", "bravo")
    by_text = ids(store, repo)
    store.set_embedding_model(repo, "m", 2)
    store.store_embeddings(repo, [(by_text["alpha"], [1.0, 0.0])])
    reader = backend.open()
    assert ranked_ids(reader.search_vector(repo, [1.0, 0.0], 10, ANY)) == [by_text["alpha"]]

    store.store_embeddings(repo, [(by_text["bravo"], [0.0, 1.0])])
    assert ranked_ids(reader.search_vector(repo, [0.0, 1.0], 10, ANY)) == [
        by_text["bravo"], by_text["alpha"]
    ]
    put(store, repo, "a.py", "charlie", sha="sha-2")  # both vectors go
    assert reader.search_vector(repo, [0.0, 1.0], 10, ANY) == []
    (charlie,) = ids(store, repo).values()
    store.store_embeddings(repo, [(charlie, [1.0, 1.0])])
    assert ranked_ids(reader.search_vector(repo, [0.0, 1.0], 10, ANY)) == [charlie]
    store.set_embedding_model(repo, "m", 3)
    assert reader.search_vector(repo, [0.0, 1.0, 0.0], 10, ANY) == []


# -- several repositories, locks, bookkeeping --------------------------------------------


def test_repositories_are_isolated(store: IndexStore) -> None:
    a, b = store.repo_id(ROOT), store.repo_id(OTHER_ROOT)
    put(store, a, "same.py", "shared_word in alpha")
    put(store, b, "same.py", "shared_word in beta", "beta extra")
    (in_a,) = ids(store, a).values()
    in_b = set(ids(store, b).values())
    assert ranked_ids(store.search_lexical(a, ["shared_word"], 10, ANY)) == [in_a]
    assert set(ranked_ids(store.search_lexical(b, ["shared_word", "extra"], 10, ANY))) == in_b
    store.set_embedding_model(a, "m", 2)
    store.set_embedding_model(b, "n", 3)
    store.store_embeddings(a, [(in_a, [1.0, 0.0])])
    store.store_embeddings(b, [(cid, [1.0, 0.0, 0.0]) for cid in in_b])
    store.store_embeddings(a, [(cid, [1.0, 0.0]) for cid in in_b])  # not a's chunks: ignored
    assert ranked_ids(store.search_vector(a, [1.0, 0.0], 10, ANY)) == [in_a]
    assert set(ranked_ids(store.search_vector(b, [1.0, 0.0, 0.0], 10, ANY))) == in_b
    store.delete_files(a, ["same.py"])
    assert store.stats(a) == RepoStats(0, 0, 0, "m", 2)
    assert store.stats(b) == RepoStats(1, 2, 0, "n", 3)
    assert set(store.file_states(b)) == {"same.py"}
    assert store.check_integrity(a) == [] and store.check_integrity(b) == []


def test_writer_lock(backend: Backend, store: IndexStore) -> None:
    a, b = store.repo_id(ROOT), store.repo_id(OTHER_ROOT)
    other = backend.open()
    with store.writer_lock(a):
        with pytest.raises(IndexLocked, match=ROOT), other.writer_lock(a, wait=False):
            pass
        with other.writer_lock(b, wait=False):  # another repository is free
            pass
    with other.writer_lock(a, wait=False):  # released
        pass
    with pytest.raises(RuntimeError), store.writer_lock(a):
        raise RuntimeError("an indexing run fails")
    with other.writer_lock(a, wait=False):  # released on error too
        pass


def test_searches_run_beside_the_writer(store: IndexStore, repo: int) -> None:
    """The search service calls from a thread pool while the indexer writes."""
    store.set_embedding_model(repo, "m", 2)

    def search(n: int) -> int:
        lexical = store.search_lexical(repo, ["common"], 50, ANY)
        vector = store.search_vector(repo, [1.0, float(n % 3)], 50, SearchFilter("*.py"))
        store.chunks([cid for cid, _ in lexical + vector])
        return len(lexical)

    with ThreadPoolExecutor(4) as pool:
        searches = [pool.submit(search, n) for n in range(200)]
        for gen in range(20):
            put(store, repo, f"f{gen % 5}.py", f"common {gen}", f"common again {gen}",
                sha=f"g{gen}")
            store.store_embeddings(repo, [(cid, [1.0, gen]) for cid in ids(store, repo).values()])
        found = [f.result() for f in searches]
    assert max(found) <= 10
    assert len(store.search_lexical(repo, ["common"], 50, ANY)) == 10
    assert len(store.search_vector(repo, [1.0, 0.0], 50, ANY)) == 10
    assert store.check_integrity(repo) == []


def test_stats_and_integrity(store: IndexStore, repo: int) -> None:
    assert store.stats(repo) == RepoStats(0, 0, 0, None, None)
    assert store.check_integrity(repo) == []
    put(store, repo, "a.py", "one", "two")
    put(store, repo, "b.py", "three")
    store.set_embedding_model(repo, "m", 2)
    store.store_embeddings(repo, [(ids(store, repo)["two"], [0.5, 0.5])])
    assert store.stats(repo) == RepoStats(2, 3, 2, "m", 2)
    assert store.check_integrity(repo) == []
    with pytest.raises(CodeIndexError):
        store.stats(987_654)
