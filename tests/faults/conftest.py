"""Fault scenarios reuse the end-to-end fixtures: our server on loopback, real clients."""

from __future__ import annotations

from tests.api.conftest import http, redis_server, serve

__all__ = ["http", "redis_server", "serve"]
