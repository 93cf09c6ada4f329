"""create_app(settings) -> FastAPI. Services are built here, never at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mimiverse import __version__
from mimiverse.admission import Admission
from mimiverse.api import (
    ai,
    assist,
    cache,
    codebase,
    health,
    models,
    triton,
    ui,
    ui_to_code,
    voice,
)
from mimiverse.api import metrics as metrics_api
from mimiverse.api.compat import ollama, openai, tabby
from mimiverse.api.errors import install_error_handlers
from mimiverse.assist.service import Assistant
from mimiverse.assist.voice import Transcriber
from mimiverse.config import Settings
from mimiverse.fim.retrieval import RepoRetriever
from mimiverse.gateway import Gateway
from mimiverse.index.service import CodebaseService
from mimiverse.routing.report import backend_states, task_lines
from mimiverse.security import SecurityGate, allowed_host_names
from mimiverse.telemetry.gpu import GpuCollector
from mimiverse.telemetry.metrics import Metrics
from mimiverse.telemetry.requests import RequestTelemetry

log = logging.getLogger("mimiverse.start")


async def _report_backends(gateway: Gateway, level: int) -> dict[str, bool]:
    """Say what serves each task, and how to fix what is missing (at `level`); return
    which backends answered. Done before serving (loopback probes take milliseconds, a
    remote one at most its connect timeout): probes running into shutdown could leak
    sockets."""
    try:
        states = await backend_states(gateway.router)
    except Exception as exc:  # a report must never keep the server from starting
        log.warning("could not check the backends: %s", exc)
        return {}
    for line in task_lines(gateway.router, states):
        log.log(level, "%s", line)
    return {name: why is None for name, why in states.items()}


def create_app(
    settings: Settings, gateway: Gateway | None = None, repos: Sequence[str] = (),
    first_worker: bool = True,
) -> FastAPI:
    """The app; `repos` are indexed (incrementally) on start, as `serve --repo` asks.

    With `serve --workers N`, only the first worker does what the server does once:
    index `repos` (the others only open them for search) and say the start-up report at
    INFO (the others at DEBUG). Every worker still probes its backends: which of them
    answer decides what it warms up (its own embedded models)."""
    gateway = gateway or Gateway(settings)
    codebase_service = CodebaseService(settings.index, gateway.router, repos)
    gateway.retriever = RepoRetriever(codebase_service, settings.repo_context)
    gpus = GpuCollector()
    metrics = Metrics(gateway, codebase_service, collectors=[gpus])
    gateway.observe(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.router.start_probes()  # readiness loops of backends that have one (triton)
        metrics.start()  # with several workers: share this one's state every second
        answers = await _report_backends(
            gateway, logging.INFO if first_worker else logging.DEBUG)
        # In-process models load now, in the background, not on the first request (and
        # the embedded model is fetched when nothing before it answers).
        warming = asyncio.create_task(gateway.router.warm_up(answers), name="warm up backends")
        await codebase_service.follow()  # PostgreSQL: every replica's repositories and jobs
        for repo in repos:
            await (codebase_service.start(repo) if first_worker else codebase_service.open(repo))
        try:
            yield
        finally:
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
            await metrics.aclose()
            await codebase_service.aclose()
            await gateway.aclose()
            gpus.close()

    app = FastAPI(
        title="Mimiverse", version=__version__, lifespan=lifespan,
        # Nothing collects FastAPI's own telemetry here; skip its per-request bookkeeping.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.codebase = codebase_service
    app.state.assistant = Assistant(gateway, codebase_service)
    app.state.transcriber = Transcriber(settings, gateway.router.backends)
    app.state.metrics = metrics
    install_error_handlers(app)

    # Our API, then the protocols editors already speak (each answering errors in its own
    # shape). Their routes join the app's own list: an included router is matched through
    # FastAPI's per-request include machinery, ~0.1 ms of CPU per request.
    for router in (ai.router, ui_to_code.router, assist.router, cache.router,
                   codebase.router, models.router, health.router, triton.router,
                   metrics_api.router, openai.router, ollama.router, tabby.router,
                   ui.router, voice.router):
        app.router.routes.extend(router.routes)
    # Body size, per-token rate and concurrency limits, and slow stream readers dropped.
    app.add_middleware(Admission, limits=settings.limits,
                       write_idle_timeout_s=settings.server.write_idle_timeout_s)
    # Host, Origin and token checks before anything reads the body (docs/security.md).
    app.add_middleware(
        SecurityGate,
        principals=settings.auth.principals(),
        allowed_hosts=allowed_host_names(settings.server.host, settings.server.allowed_hosts),
        cors_origins=settings.server.cors_origins,
    )
    # Outermost: counts and logs every answer, 401s and 413s too, under a request id.
    app.add_middleware(RequestTelemetry, metrics=metrics)
    return app
