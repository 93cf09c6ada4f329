"""Limits on what clients send, shared by our API and the protocols we speak."""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

MAX_TEXT = 1_000_000  # characters of prefix, suffix, prompt or message content
StopText = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EmbedText = Annotated[str, StringConstraints(max_length=100_000)]
EmbedTexts = Annotated[list[EmbedText], Field(min_length=1, max_length=256)]


def _duration(value: str | float) -> str | float:
    if isinstance(value, str) and len(value) > 32:
        raise ValueError("must be a duration such as 5m (at most 32 characters), or seconds")
    return value


# Ollama's: a duration ("5m", "0s") or seconds; only an unload (0) asks anything of others.
# One union, so that a long text is refused rather than read as a number of seconds.
KeepAlive = Annotated[str | float, AfterValidator(_duration)]


class NumbersNotBooleans(BaseModel):
    """A request body whose int and float fields refuse JSON's true and false: pydantic's
    lax mode reads them as 1 and 0, and OpenAI and Ollama refuse them. (A whole number
    written as 8.0 stays an integer, as JSON Schema says.)"""

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in _number_fields(cls):
            raise ValueError("a number is expected, not true or false")
        return value


@functools.cache
def _number_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in model.model_fields.items()
                     if _holds_number(field.annotation))


def _holds_number(annotation: Any) -> bool:
    return annotation in (int, float) or any(_holds_number(arg)
                                             for arg in typing.get_args(annotation))
