"""Fixtures of the page tests: our server on loopback."""

from __future__ import annotations

from tests.api.conftest import http, serve

__all__ = ["http", "serve"]
