"""Shared fixtures. Test doubles are real loopback servers speaking the real protocols."""
