"""Real processes sharing real services: PostgreSQL (embedded), Redis."""

from __future__ import annotations

from tests.index.store.conftest import postgres_conninfo, postgres_url
from tests.support.redis_server import redis_server

__all__ = ["postgres_conninfo", "postgres_url", "redis_server"]
