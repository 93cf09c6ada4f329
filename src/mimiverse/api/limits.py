"""Limits on what clients send, shared by our API and the protocols we speak."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, StringConstraints

MAX_TEXT = 1_000_000  # characters of prefix, suffix, prompt or message content
StopText = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EmbedText = Annotated[str, StringConstraints(max_length=100_000)]
EmbedTexts = Annotated[list[EmbedText], Field(min_length=1, max_length=256)]


def _not_a_bool(value: object) -> object:
    """JSON's true and false are not numbers, though pydantic's lax mode reads them as 1
    and 0; the protocols we speak refuse them too."""
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true or false")
    return value


# The numbers of request bodies (answers use plain int and float).
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
