"""GET /api/triton/status and /api/triton/metrics: the first configured triton backend.

Status is what the router's readiness probe last saw (probing now if it has not run yet),
plus the model's metadata from the server; metrics is Triton's own Prometheus text,
proxied from its metrics port. 404 when no triton backend is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from mimiverse.api.deps import GatewayDep
from mimiverse.api.errors import COMMON_ERRORS, error_responses
from mimiverse.config import TASKS
from mimiverse.credentials import without_credentials
from mimiverse.errors import BackendError, ModelNotFound
from mimiverse.gateway import Gateway

if TYPE_CHECKING:  # importing it pulls tritonclient in; only configured backends do
    from mimiverse.backends.triton import TritonBackend

# 404: no triton backend is configured; 503: its metrics port does not answer.
router = APIRouter(prefix="/api/triton", tags=["triton"],
                   responses=error_responses(*COMMON_ERRORS, 404, 503))

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _first_triton(gateway: Gateway) -> TritonBackend:
    for backend in gateway.router.backends.values():
        if backend.kind == "triton":
            return cast("TritonBackend", backend)
    raise ModelNotFound(
        "no triton backend is configured: add one to [[backends]] with kind = 'triton' "
        "and url = 'http://host:8000' (or protocol = 'grpc' and url = 'host:8001')"
    )


def _served_model(gateway: Gateway, backend: TritonBackend) -> str | None:
    """The Triton model the routes ask of this backend (the setting, else the route's)."""
    if backend.options.model:
        return backend.options.model
    for task in TASKS:
        route = gateway.router.route(task)
        if backend.name in route.backends:
            return backend.triton_model(route.model)
    return None


@router.get("/status")
async def status(gateway: GatewayDep) -> JSONResponse:
    backend = _first_triton(gateway)
    health = gateway.router.health
    result = health.result(backend.name) or await health.check(backend.name)
    model = _served_model(gateway, backend)
    body: dict[str, Any] = {
        "backend": backend.name,
        "healthy": result.healthy,
        "lastCheck": result.checked_at,
        "latencyMs": result.latency_ms,
        "error": result.error,
        "url": without_credentials(backend.url),
        "protocol": backend.options.protocol,
        "model": model,
        "metadata": None,
    }
    if result.healthy and model is not None:
        try:
            body["metadata"] = await backend.model_metadata(model)
        except BackendError as exc:
            body["metadataError"] = exc.reason
    return JSONResponse(body)


# Declared by hand: a response_class would also make the JSON errors "text/plain".
@router.get("/metrics", responses={200: {
    "content": {PROMETHEUS_TEXT.split(";")[0]: {"schema": {"type": "string"}}},
    "description": "Triton's Prometheus text"}})
async def metrics(gateway: GatewayDep) -> Response:
    backend = _first_triton(gateway)
    try:
        text = await backend.metrics_text()
    except BackendError as exc:
        return JSONResponse(
            {"error": {"type": "triton_unavailable",
                       "message": f"cannot read Triton's metrics at {backend.metrics_url}: "
                                  f"{exc.reason}"}},
            status_code=503,
        )
    return Response(text, media_type=PROMETHEUS_TEXT)
