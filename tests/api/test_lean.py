"""LeanRoute: which routes skip FastAPI's generic handler, and that what they answer is
what FastAPI would (statuses, error shapes, the route template the telemetry sees)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from mimiverse.api.deps import GatewayDep
from mimiverse.api.lean import LeanRoute
from mimiverse.app import create_app
from mimiverse.config import Settings
from tests.api.conftest import Serve
from tests.servers.behaviour import beyond_probes
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for


def test_the_hot_routes_are_lean_and_the_others_are_not() -> None:
    app = create_app(Settings())
    lean = sorted(r.path for r in app.routes if isinstance(r, APIRoute) and
                  getattr(r, "lean", False))
    assert lean == sorted([
        "/api/ai/fim", "/api/ai/fim/stream", "/api/ai/chat", "/api/ai/embed",
        "/api/ai/ui-to-code", "/v1/completions", "/v1/chat/completions", "/v1/embeddings",
        "/v1/models",
        "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/tags",
        "/api/show", "/api/version",
    ])


class Body(BaseModel):
    n: int = Field(ge=0)


class Answer(BaseModel):
    doubled: int


def test_signatures_that_need_fastapi_keep_its_handler() -> None:
    router = APIRouter(route_class=LeanRoute)

    @router.post("/lean")
    async def lean(body: Body, request: Request, gateway: GatewayDep) -> Answer:
        return Answer(doubled=2 * body.n)

    @router.get("/query")
    async def query(n: int) -> Answer:  # a query parameter: FastAPI's job
        return Answer(doubled=2 * n)

    @router.get("/plain")
    async def plain() -> dict[str, int]:  # not a model or a Response
        return {"n": 1}

    flags = {r.path: r.lean for r in router.routes if isinstance(r, LeanRoute)}
    assert flags == {"/lean": True, "/query": False, "/plain": False}


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        ({"content-type": "text/plain"}, b'{"prefix": "x"}', 422,
         "body: the body must be JSON with Content-Type application/json, got 'text/plain'"),
        ({}, b'{"prefix": "x"}', 422, "got 'none'"),
        ({"content-type": "application/json"}, b"", 422,
         "body: JSON decode error: EOF while parsing"),
        ({"content-type": "application/json"}, b"[1]", 422, "body: Input should be an object"),
        ({"content-type": "application/json"}, b'{"suffix": "x"}', 422,
         "prefix: Field required"),
        ({"content-type": "application/json; charset=utf-8"}, b'{"prefix": "x", "seed": -1}',
         422, "seed: Input should be greater than or equal to 0"),
    ],
    ids=["text-plain", "no-content-type", "empty", "array", "missing-field", "bad-seed"],
)
async def test_lean_bodies_are_refused_as_fastapi_would(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient,
    headers: dict[str, str], body: bytes, status: int, says: str,
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    r = await http.post(f"{app.url}/api/ai/fim", content=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request"
    assert says in error["message"], error
    assert beyond_probes(ollama_server.behaviour) == {}


async def test_a_lean_answer_is_json_with_its_length(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("ollama", "ollama", ollama_server.url)))
    r = await http.post(f"{app.url}/api/ai/fim", json={"prefix": "x = "})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert set(r.json()) == {"completion", "latency", "cached", "model", "backend"}
    # The route template still reaches the metrics (the route matched as any other).
    metrics = (await http.get(f"{app.url}/metrics")).text
    assert 'mimiverse_http_requests_total{method="POST",route="/api/ai/fim",status="2xx"} 1.0' \
        in metrics
