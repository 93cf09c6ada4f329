"""Limits on what clients send, shared by our API and the protocols we speak."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

MAX_TEXT = 1_000_000  # characters of prefix, suffix, prompt or message content
StopText = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EmbedText = Annotated[str, StringConstraints(max_length=100_000)]
EmbedTexts = Annotated[list[EmbedText], Field(min_length=1, max_length=256)]
