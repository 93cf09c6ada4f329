"""What serves each task, said at start: one line per task, then each missing piece
with its fix. `mimiverse doctor` shares the fixes."""

from __future__ import annotations

import asyncio
import importlib.util

from mimiverse.config import TASKS, BackendSettings
from mimiverse.errors import BackendError
from mimiverse.routing.router import Router
from mimiverse.weights import fetch
from mimiverse.weights.catalog import CATALOG

WHISPER_MODULES = ("torch", "transformers", "soundfile", "scipy")  # the whisper extra

def fix_for(config: BackendSettings, model: str | None = None) -> str:
    """How to bring this backend up (`model`: the route's model, for `ollama pull`)."""
    if config.kind == "ollama":
        pull = f" and `ollama pull {model}`" if model else ""
        return (f"start Ollama (`ollama serve`) so it listens on {config.url}{pull}, "
                "or point this backend's url at a running one")
    if config.kind == "openai":
        return (f"start the OpenAI-compatible server (vLLM, llama.cpp server, LM Studio) at "
                f"{config.url}, or fix this backend's url/api_key")
    if config.kind == "llamacpp":
        if importlib.util.find_spec("llama_cpp") is None:
            return "pip install 'mimiverse[llamacpp]' (`make run` installs it)"
        if config.model:
            return fetch.missing_hint(CATALOG[config.model])
        return f"check that {config.model_path} is a readable GGUF file"
    if config.kind == "sentence-transformers":
        if importlib.util.find_spec("sentence_transformers") is None:
            return "pip install 'mimiverse[embed]'"
        return "check model_path (a sentence-transformers model folder), or leave it unset"
    if config.kind == "whisper":
        if any(importlib.util.find_spec(m) is None for m in WHISPER_MODULES):
            return "pip install 'mimiverse[whisper]'"
        return ("set model_path to a Whisper model folder (config.json, weights, tokenizer "
                "and preprocessor_config.json, as transformers' save_pretrained writes)")
    return "check this backend's configuration"


async def _state(router: Router, config: BackendSettings) -> str | None:
    """None when the backend answers (or will, once loaded); else why not."""
    if config.kind == "llamacpp" and config.model:
        if importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed"
        model = CATALOG[config.model]
        if await asyncio.to_thread(fetch.find_local, model) is not None:
            return None
        if fetch.offline():
            return f"{model.name} is not downloaded and HF_HUB_OFFLINE is set"
        return None  # warm-up fetches it (if nothing before it answers)
    if config.kind in ("llamacpp", "sentence-transformers", "whisper"):
        return None  # in-process: loads in the background; the first request says why not
    try:
        await router.check(config.name)
    except BackendError as exc:
        return exc.reason
    return None


async def backend_states(router: Router) -> dict[str, str | None]:
    """Each routed backend: None when it answers (or will, once loaded), else why not."""
    used = list(dict.fromkeys(n for t in TASKS for n in router.route(t).backends))
    found = await asyncio.gather(*(_state(router, router.backends[n].config) for n in used))
    return dict(zip(used, found, strict=True))


def task_lines(router: Router, states: dict[str, str | None]) -> list[str]:
    """One line per task (model, the backend that will serve it, what is unreachable),
    then one line per missing piece with its fix."""
    configs = {b.name: b.config for b in router.backends.values()}
    lines: list[str] = []
    fixes: dict[str, str] = {}
    for task in TASKS:
        route = router.route(task)
        up = [n for n in route.backends if states[n] is None]
        down = [n for n in route.backends if states[n] is not None]
        serving = (f"{up[0]} ({configs[up[0]].kind}{_what(configs[up[0]])})" if up
                   else "NOTHING: no backend is reachable")
        skipped = f"; unreachable: {', '.join(down)}" if down and up and down[0] != up[0] else ""
        if down and not up:
            skipped = f" (tried {', '.join(down)})"
        lines.append(f"{task}: {route.model} -> {serving}{skipped}")
        pull = route.model if task != "embedding" else None
        for n in down:
            fixes.setdefault(n, f"  {n}: {states[n]}; fix: {fix_for(configs[n], pull)}")
    return lines + list(fixes.values())


def _what(config: BackendSettings) -> str:
    if config.kind == "llamacpp":
        return f", {config.model or config.model_path}"
    return f", {config.url}" if config.url else ""
