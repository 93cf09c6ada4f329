"""GET /api/models/available: what each task uses, and its backends' current health."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from mimiverse.api.deps import GatewayDep
from mimiverse.api.errors import COMMON_ERRORS, error_responses
from mimiverse.config import TASKS
from mimiverse.routing.capabilities import reported

router = APIRouter(tags=["models"], responses=error_responses(*COMMON_ERRORS))

USES = {
    "completion": "code completion (fill-in-the-middle)",
    "chat": "chat about code",
    "embedding": "embeddings for code search",
}


class BackendHealth(BaseModel):
    name: str
    kind: str
    state: str
    healthy: bool
    last_error: str | None
    cooldown_left_s: float
    in_flight: int  # requests of every task open on it now (this process)
    share: float  # fraction of this task's answers it gave (this process, since start)


class TaskModel(BaseModel):
    model: str
    use: str
    family: str | None
    capabilities: list[str]
    balance: str
    backends: list[BackendHealth]


class AvailableModels(BaseModel):
    models: dict[str, TaskModel]


@router.get("/api/models/available")
async def available(gateway: GatewayDep) -> AvailableModels:
    status = gateway.router.status()
    balancer = gateway.router.balancer
    models = {}
    for task in TASKS:
        route = gateway.router.route(task)
        family = gateway.fim_template.family if task == "completion" else route.family
        models[task] = TaskModel(
            model=route.model, use=USES[task], family=family, balance=route.balance,
            # What is known now: a health page never waits on a backend's /api/show.
            capabilities=await reported(gateway.capabilities, task, ask=False),
            backends=[
                BackendHealth(
                    name=name, kind=status[name].kind, state=status[name].state,
                    healthy=status[name].healthy, last_error=status[name].last_error,
                    cooldown_left_s=status[name].cooldown_left_s,
                    in_flight=balancer.load[name].in_flight,
                    share=round(balancer.share(task, name), 4),
                )
                for name in route.backends
            ],
        )
    return AvailableModels(models=models)
