"""PostgreSQL-only behaviour: the per-repository HNSW index and migrations."""

from __future__ import annotations

import pytest

from mimiverse.errors import CodeIndexError
from mimiverse.index.model import Chunk, FileState, SearchFilter
from mimiverse.index.store.postgres import SCHEMA_VERSION, PostgresStore
from mimiverse.index.tokenize import tokens

psycopg = pytest.importorskip("psycopg")


def _fill(store: PostgresStore, repo: int, n: int) -> list[list[float]]:
    """n chunks over four files, with vectors spread around the circle in 2-d."""
    import math

    files = [f"src/m{i}.py" if i % 2 else f"lib/m{i}.py" for i in range(4)]
    store.replace_files(repo, [
        (FileState(path, 1, 1, "s", "python"),
         [Chunk(path, k, k, f"chunk {k}", "python") for k in range(i, n, 4)])
        for i, path in enumerate(files)
    ])
    pending = store.pending_embeddings(repo, n)
    store.set_embedding_model(repo, "m", 2)
    vectors = [[math.cos(k / 7), math.sin(k / 7)] for k in range(len(pending))]
    store.store_embeddings(repo, [(cid, v) for (cid, _), v in zip(pending, vectors, strict=True)])
    return vectors


def _indexes(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings'"
            " AND indexname LIKE 'embeddings_hnsw%' AND schemaname = current_schema()"
        ).fetchall()
    return [r[0] for r in rows]


def test_hnsw_index_is_built_and_ranks_like_the_exact_scan(postgres_conninfo: str) -> None:
    exact = PostgresStore(postgres_conninfo, tokenizer=tokens, hnsw_min_rows=10_000)
    indexed = PostgresStore(postgres_conninfo, tokenizer=tokens, hnsw_min_rows=50)
    try:
        small = exact.repo_id("/exact")
        _fill(exact, small, 200)
        big = indexed.repo_id("/indexed")
        _fill(indexed, big, 200)
        assert _indexes(postgres_conninfo) == [f"embeddings_hnsw_{big}"]
        for where in (SearchFilter(), SearchFilter(path_glob="src/*.py")):
            a = exact.search_vector(small, [1.0, 0.3], 20, where)
            b = indexed.search_vector(big, [1.0, 0.3], 20, where)
            assert len(a) == len(b) == 20
            assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)
        # A new model drops the index with the vectors; it is rebuilt when they are back.
        assert indexed.set_embedding_model(big, "other", 3) is True
        assert _indexes(postgres_conninfo) == []
        assert indexed.check_integrity(big) == [] and exact.check_integrity(small) == []
    finally:
        exact.close()
        indexed.close()


def test_migrations_run_once_and_refuse_a_newer_schema(postgres_conninfo: str) -> None:
    PostgresStore(postgres_conninfo, tokenizer=tokens).close()
    PostgresStore(postgres_conninfo, tokenizer=tokens).close()  # idempotent
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(CodeIndexError, match="newer"):
        PostgresStore(postgres_conninfo, tokenizer=tokens)


def test_an_index_of_the_first_schema_is_forgotten_and_rebuilt(postgres_conninfo: str) -> None:
    """Schema 2: chunks became one per function, embedded with a header; every file and
    chunk of schema 1 is forgotten, so the next run chunks and embeds everything again."""
    store = PostgresStore(postgres_conninfo, tokenizer=tokens)
    try:
        repo = store.repo_id("/repos/old")
        store.replace_files(repo, [(FileState("old.py", 1, 1, "s", None),
                                    [Chunk("old.py", 1, 1, "legacy row")])])
        store.set_embedding_model(repo, "m", 2)
        (cid, _), = store.pending_embeddings(repo, 10)
        store.store_embeddings(repo, [(cid, [1.0, 0.0])])
    finally:
        store.close()
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 1")
    store = PostgresStore(postgres_conninfo, tokenizer=tokens)
    try:
        assert store.file_states(repo) == {}
        assert store.stats(repo).chunks == 0 and store.stats(repo).embedding_model == "m"
        assert store.search_lexical(repo, ["legacy"], 10, SearchFilter()) == []
        assert store.search_vector(repo, [1.0, 0.0], 10, SearchFilter()) == []
        assert store.check_integrity(repo) == []
        store.replace_files(repo, [(FileState("new.py", 1, 1, "t", None),
                                    [Chunk("new.py", 1, 1, "fresh row")])])
        assert len(store.search_lexical(repo, ["row"], 10, SearchFilter())) == 1
        assert store.check_integrity(repo) == []
    finally:
        store.close()


def test_unreachable_server_is_our_error(tmp_path: object) -> None:
    with pytest.raises(CodeIndexError, match="cannot use the PostgreSQL index"):
        PostgresStore(f"postgresql:///x?host={tmp_path}&connect_timeout=2", tokenizer=tokens)
