"""Operational views: GET /metrics (Prometheus) and GET /api/models/loaded (what the
Ollama servers hold in memory now)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from mimiverse.api.deps import GatewayDep
from mimiverse.api.errors import COMMON_ERRORS, error_responses
from mimiverse.backends.ollama import LoadedModel, OllamaBackend
from mimiverse.errors import BackendError, BackendTimeout
from mimiverse.telemetry.metrics import Metrics

router = APIRouter(tags=["operations"], responses=error_responses(*COMMON_ERRORS))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    collected: Metrics = request.app.state.metrics
    return Response(await collected.render(), media_type=CONTENT_TYPE_LATEST)


class ModelInMemory(BaseModel):
    name: str
    backend: str
    size: int = Field(description="bytes in memory, on all devices")
    size_vram: int = Field(description="bytes of it in GPU memory")
    expires_at: str | None = Field(description="when the server unloads it (RFC 3339)")


class BackendReach(BaseModel):
    name: str
    kind: str
    reachable: bool
    error: str | None = None


class LoadedModels(BaseModel):
    models: list[ModelInMemory]
    backends: list[BackendReach] = Field(description="every Ollama backend asked")


@router.get("/api/models/loaded")
async def loaded(gateway: GatewayDep) -> LoadedModels:
    """Models loaded in each configured Ollama backend (its /api/ps); a backend that is
    down is listed as unreachable, with why."""
    ollamas = [b for b in gateway.router.backends.values() if isinstance(b, OllamaBackend)]
    answers = await asyncio.gather(*(_running(b) for b in ollamas))
    models: list[ModelInMemory] = []
    backends: list[BackendReach] = []
    for backend, answer in zip(ollamas, answers, strict=True):
        if isinstance(answer, BackendError):
            backends.append(BackendReach(name=backend.name, kind=backend.kind,
                                         reachable=False, error=answer.reason))
            continue
        backends.append(BackendReach(name=backend.name, kind=backend.kind, reachable=True))
        models += [
            ModelInMemory(name=m.name, backend=backend.name, size=m.size,
                          size_vram=m.size_vram, expires_at=m.expires_at)
            for m in answer
        ]
    return LoadedModels(models=models, backends=backends)


async def _running(backend: OllamaBackend) -> list[LoadedModel] | BackendError:
    limit = backend.config.timeouts.connect_s + 1.0  # as the readiness check allows
    try:
        async with asyncio.timeout(limit):
            return await backend.running_models()
    except TimeoutError:
        return BackendTimeout(f"/api/ps: no answer within {limit:g}s", backend=backend.name)
    except BackendError as exc:
        return exc
