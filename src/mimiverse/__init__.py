"""Mimiverse: a self-hosted AI backend for code editors."""

__version__ = "0.1.0"
