"""Helpers the tests share: model files they write, fixtures they import."""
