"""Cache keys: a SHA-256 over a canonical JSON of everything that changes the answer.

Callers pass every input that can change the output (model, prompt family, the rendered
prompt or the normalised messages / embedding input, sampling parameters, max tokens,
stops). Two requests share a key exactly when those inputs are equal as JSON values, so
`temperature=0` and `temperature=0.0`, or a tuple and a list of the same stops, hash alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from typing import Any

import orjson

from mimiverse.security import current_principal

# Bumped whenever the canonical form changes, so old entries simply stop matching.
KEY_VERSION = 1


def cache_key(task: str, **parts: object) -> str:
    """Hex SHA-256 of `task` and `parts` in canonical JSON (keys sorted, floats folded).

    Keys of a request from a team's token are the team's own: one tenant never gets
    another's cached answer, nor learns by timing what another asked.
    """
    # Parts are nested so no part name can shadow the version or the task.
    payload = {"v": KEY_VERSION, "task": task, "parts": _canonical(parts)}
    team = current_principal.get().team
    if team is not None:
        payload["team"] = team
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def is_deterministic(temperature: float, seed: int | None, cache_seeded: bool) -> bool:
    """May this sampling setup be cached? Greedy decoding always; a fixed seed if allowed."""
    # Backends treat temperature <= 0 as greedy; a seed alone repeats only on the same engine
    # build, which is why caching seeded requests is a setting.
    return temperature <= 0 or (seed is not None and cache_seeded)


def _canonical(value: object) -> Any:
    """A JSON-ready copy where equal inputs look equal (1.0 -> 1, tuple -> list, ...)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum and friends become plain numbers
    if isinstance(value, float):
        # An integral float is the same parameter as the int; NaN/inf have no JSON form.
        if not math.isfinite(value):
            return repr(value)
        # (Beyond 64 bits orjson writes no integer: such a float stays one.)
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda item: orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cache_key cannot canonicalise {type(value).__name__}")
