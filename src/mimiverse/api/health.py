"""Liveness (the process answers) and readiness (per dependency: ok / degraded / down)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mimiverse.api.deps import GatewayDep
from mimiverse.api.errors import COMMON_ERRORS, error_responses
from mimiverse.config import TASKS
from mimiverse.credentials import without_credentials
from mimiverse.errors import BackendError

router = APIRouter(prefix="/health", tags=["health"], responses=error_responses(*COMMON_ERRORS))

Level = Literal["ok", "degraded", "down"]


class Check(BaseModel):
    # "loading": an in-process model still warming up (downloading or loading): it will
    # answer soon, so its tasks count as degraded, not down.
    status: Literal["ok", "loading", "degraded", "down"]
    detail: str | None = None


class Readiness(BaseModel):
    status: Level
    checks: dict[str, Check]


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "a task has no backend up"}})
async def ready(gateway: GatewayDep) -> JSONResponse:
    router = gateway.router
    warming = set(router.warming)  # probing those would wait for their load
    names = [n for n in router.backends if n not in warming]
    results = await asyncio.gather(
        *(router.check(name) for name in names), return_exceptions=True
    )
    checks: dict[str, Check] = {
        f"backend:{n}": Check(status="loading", detail="warming up (fetching or loading its model)")
        for n in warming
    }
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BackendError):
            checks[f"backend:{name}"] = Check(status="down", detail=result.reason)
        elif isinstance(result, BaseException):
            checks[f"backend:{name}"] = Check(status="down",
                                              detail=without_credentials(repr(result)))
        else:
            checks[f"backend:{name}"] = Check(status="ok")
    # A task is down when none of its backends answer; degraded when some do not.
    overall: Level = "ok"
    for task in TASKS:
        states = [checks[f"backend:{n}"].status for n in router.route(task).backends]
        if all(s == "down" for s in states):
            overall = "down"
        elif overall == "ok" and ("down" in states or "loading" in states):
            overall = "degraded"
    # The cache fails open: when it is unreachable we serve uncached, i.e. degraded.
    cache_status, cache_detail = gateway.cache.health()
    checks[f"cache:{gateway.cache.kind}"] = Check(status=cache_status, detail=cache_detail)
    if overall == "ok" and cache_status != "ok":
        overall = "degraded"
    body = Readiness(status=overall, checks=checks)
    return JSONResponse(body.model_dump(), status_code=503 if overall == "down" else 200)
