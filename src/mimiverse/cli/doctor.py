"""`mimiverse models` and `mimiverse doctor`: what is configured, what answers, how to fix."""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from mimiverse.backends.base import Backend
from mimiverse.backends.registry import build_backend
from mimiverse.cli.common import ConfigOption, console, fail, run, settings_from
from mimiverse.config import TASKS, BackendSettings, Settings
from mimiverse.errors import MimiverseError
from mimiverse.routing.report import fix_for
from mimiverse.weights import fetch
from mimiverse.weights.catalog import CATALOG


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    models: tuple[str, ...] = ()


async def _probe(config: BackendSettings) -> Probe:
    if config.kind == "llamacpp":
        if importlib.util.find_spec("llama_cpp") is None:
            return Probe(config.name, False, "llama-cpp-python is not installed",
                         fix_for(config))
        if config.model:
            if await asyncio.to_thread(fetch.find_local, CATALOG[config.model]) is None:
                return Probe(config.name, False, f"model {config.model} is not downloaded",
                             fix_for(config))
        elif not await asyncio.to_thread(Path(config.model_path or "").is_file):
            return Probe(config.name, False, f"model file {config.model_path} not found",
                         "set model_path to an existing GGUF file")
    if config.kind == "sentence-transformers" and (
        importlib.util.find_spec("sentence_transformers") is None
    ):
        return Probe(config.name, False, "sentence-transformers is not installed",
                     fix_for(config))
    backend: Backend | None = None
    # An in-process model may take seconds to load the first time; a server should not.
    limit = 60.0 if config.kind in ("llamacpp", "sentence-transformers", "whisper") else (
        config.timeouts.connect_s + 3)
    try:
        backend = build_backend(config)
        async with asyncio.timeout(limit):
            await backend.check_health()
            models = tuple(await backend.list_models())
        return Probe(config.name, True, f"reachable, {len(models)} models listed", models=models)
    except TimeoutError:
        return Probe(config.name, False, "timed out", fix_for(config))
    except MimiverseError as exc:
        return Probe(config.name, False, str(exc), fix_for(config))
    finally:
        if backend is not None:
            await backend.aclose()


async def _probe_all(settings: Settings) -> dict[str, Probe]:
    probes = await asyncio.gather(*(_probe(b) for b in settings.backends))
    return {p.name: p for p in probes}


def _model_listed(model: str, listed: tuple[str, ...]) -> bool:
    # Ollama lists "name:tag"; a bare name means ":latest".
    wanted = {model, f"{model}:latest"} if ":" not in model else {model}
    return not listed or bool(wanted & set(listed))


def doctor(config: ConfigOption = None) -> None:
    """Check every configured backend and dependency; say what answers and how to fix the rest."""
    settings = settings_from(config)
    probes = run(_probe_all(settings))

    # One block per backend, not a table: a five-column table squeezes the fixes into a
    # few characters per line at 80 columns, and these lines wrap like any text.
    console.print("[bold]backends[/]")
    for b in settings.backends:
        p = probes[b.name]
        status = "[green]ok[/]" if p.ok else "[red]down[/]"
        where = b.url or b.model or b.model_path or ""
        console.print(f"{status} {b.name} ({b.kind}{', ' + where if where else ''}): "
                      f"{escape(p.detail)}", highlight=False)
        if p.fix:
            console.print(f"   fix: {escape(p.fix)}", highlight=False)
    console.print()

    problems = 0
    kinds = {b.name: b.kind for b in settings.backends}
    for task in TASKS:
        route = settings.models.route(task)
        up = [n for n in route.backends if probes[n].ok]
        if not up:
            problems += 1
            console.print(f"[red]✗ {task}[/]: {route.model} has no reachable backend "
                          f"(tried {', '.join(route.backends)})")
            continue
        missing = [n for n in up if kinds[n] in ("ollama", "openai")
                   and not _model_listed(route.model, probes[n].models)]
        note = ""
        if missing:
            note = (f" — {route.model} is not listed by {', '.join(missing)}; "
                    f"e.g. `ollama pull {route.model}`")
        console.print(f"[green]✓ {task}[/]: {route.model} via {', '.join(up)}{note}")
    if importlib.util.find_spec("llama_cpp") is None:
        console.print("[dim]· llama-cpp-python not installed (optional: mimiverse[llamacpp])[/]")
    if problems or any(not probes[n].ok for n in settings.models.completion.backends):
        console.print(
            "· No Ollama? The embedded llama.cpp serves completion and chat on this CPU: "
            "`mimiverse pull` fetches the default model (`mimiverse pull --list` shows the "
            "catalog), and `make run` installs what it needs. With Ollama: `ollama pull "
            f"{settings.models.completion.model}`.", highlight=False)
    if problems:
        raise fail(f"{problems} task(s) cannot be served; see the fixes above")


def models(config: ConfigOption = None) -> None:
    """List the model each task uses and the models each backend offers."""
    settings = settings_from(config)
    for task in TASKS:
        route = settings.models.route(task)
        console.print(f"[bold]{task}[/]: {route.model} → {', '.join(route.backends)}")
    probes = run(_probe_all(settings))
    for name, probe in probes.items():
        if probe.ok:
            listed = ", ".join(probe.models) or "(lists none)"
            console.print(f"  {name}: {listed}", highlight=False)
        else:
            console.print(f"  {name}: [red]unreachable[/] ({probe.detail})", highlight=False)


