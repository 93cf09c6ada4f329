"""GET / (the page: ask, search, server status) and GET /api/status (what it shows).

The page is one HTML file with its script inline, read from the package once; it calls
the API from the same origin, so the security gate checks it like any client (with
tokens configured the browser asks for one: see security.py).
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from mimiverse import __version__
from mimiverse.api.codebase import Status, get_codebase, status_of
from mimiverse.api.deps import GatewayDep
from mimiverse.api.errors import COMMON_ERRORS, error_responses
from mimiverse.config import TASKS

router = APIRouter(tags=["ui"], responses=error_responses(*COMMON_ERRORS))
# The page may load nothing from elsewhere and run no script but its own.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                               "style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def page() -> bytes:
    return files("mimiverse.ui").joinpath("index.html").read_bytes()


class Route(BaseModel):
    model: str
    backends: list[str]
    max_prompt_tokens: int


class BackendInfo(BaseModel):
    name: str
    kind: str


class ServerStatus(BaseModel):
    version: str
    tasks: dict[str, Route]
    backends: list[BackendInfo]
    indexes: list[Status]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(page(), headers=PAGE_HEADERS)


@router.get("/api/status")
async def server_status(request: Request, gateway: GatewayDep) -> ServerStatus:
    """Tasks and their routes, backends, and the indexes this caller may see (health:
    /health/ready; cache: /api/cache/stats)."""
    routes = gateway.settings.models
    codebase = await get_codebase(request)
    jobs = list(codebase.visible_jobs().values())
    return ServerStatus(
        version=__version__,
        tasks={t: Route(model=routes.route(t).model, backends=routes.route(t).backends,
                        max_prompt_tokens=routes.route(t).max_prompt_tokens) for t in TASKS},
        backends=[BackendInfo(name=b.name, kind=b.kind) for b in gateway.router.backends.values()],
        indexes=list(await asyncio.gather(*(status_of(job) for job in jobs))),
    )
