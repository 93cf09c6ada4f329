"""The strict base model of every settings section: unknown keys are refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # Unknown keys are typos more often than not: refuse them with the field name.
    model_config = ConfigDict(extra="forbid")
