"""Fixtures of the assist tests: our server on loopback over the fixture repository."""

from __future__ import annotations

from tests.api.conftest import http, serve

__all__ = ["http", "serve"]
