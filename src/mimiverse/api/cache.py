"""GET /api/cache/stats and DELETE /api/cache."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from mimiverse.api.deps import GatewayDep
from mimiverse.api.errors import COMMON_ERRORS, error_responses
from mimiverse.errors import Forbidden
from mimiverse.security import current_principal

router = APIRouter(prefix="/api/cache", tags=["cache"],
                   responses=error_responses(*COMMON_ERRORS))


class Stats(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    hits: int
    misses: int
    hit_rate: float = Field(serialization_alias="hitRate", description="percent")
    keys: int
    kind: str
    bytes: int
    status: str
    detail: str | None = None


class Cleared(BaseModel):
    cleared: int


@router.get("/stats", response_model_by_alias=True)
async def stats(gateway: GatewayDep) -> Stats:
    s = await gateway.cache.stats()
    return Stats(hits=s.hits, misses=s.misses, hit_rate=s.hit_rate, keys=s.keys, kind=s.kind,
                 bytes=s.bytes, status=s.status, detail=s.detail)


@router.delete("")
async def clear(gateway: GatewayDep) -> Cleared:
    """Delete this server's entries (on Redis: only keys under our prefix). Not for a
    team's tokens: the cache holds every team's entries."""
    team = current_principal.get().team
    if team is not None:
        raise Forbidden(f"team {team!r} may not clear the shared cache; a token outside "
                        "[[auth.teams]] may")
    return Cleared(cleared=await gateway.cache.clear())
