"""Repository-aware FIM end to end: index a fixture repository, ask for a completion, and
check exactly which snippets reach the prompt the backend receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mimiverse.backends.base import Backend, Delta, GenerateRequest
from mimiverse.backends.llamacpp import LlamaCppBackend
from mimiverse.config import BackendSettings, Settings, load_settings
from mimiverse.fim.retrieval import RepoRetriever
from mimiverse.fim.templates import ContextFile
from mimiverse.gateway import FimInput, Gateway
from mimiverse.index.service import CodebaseService
from mimiverse.security import Principal, current_principal
from tests.support.embedder import BowEmbedder
from tests.support.fixtures import tiny_gguf as tiny_gguf
from tests.support.tiny_gguf import TinyModelInfo

REPO = {
    "billing/tax.py": '''VAT_RATES = {"standard": 0.2, "reduced": 0.05}


def compute_vat(amount: float, rate_name: str) -> float:
    """VAT due on a net amount at one of the named rates."""
    return round(amount * VAT_RATES[rate_name], 2)
''',
    "billing/invoice.py": '''from billing.tax import compute_vat


def line_total(quantity: int, unit_price: float) -> float:
    return quantity * unit_price


def invoice_total(lines, rate_name):
    net = sum(line_total(q, p) for q, p in lines)
    return net + compute_vat(net, rate_name)
''',
    "shipping/parcels.py": '''def parcel_weight(items):
    return sum(item.weight for item in items)


def pick_carrier(weight_kg):
    return "truck" if weight_kg > 30 else "van"
''',
    "util/text.py": '''def slugify(title):
    return "-".join(title.lower().split())
''',
}

# The cursor: writing invoice_total, right after `net + `.
FILE = REPO["billing/invoice.py"]
CURSOR = FILE.index("compute_vat(net")
PREFIX, SUFFIX = FILE[:CURSOR], FILE[CURSOR:]


class PromptRecorder(Backend):
    """A completion backend that keeps every prompt it is sent and answers `reply`."""

    kind = "recorder"
    tasks = frozenset({"completion"})

    def __init__(self, reply: str = "compute_vat(net, rate_name)") -> None:
        super().__init__(BackendSettings(name="rec", kind="openai", url="http://127.0.0.1:9"))
        self.reply = reply
        self.prompts: list[str] = []

    async def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        self.prompts.append(request.prompt)
        yield Delta(self.reply, finish_reason="stop")


def make_settings(tmp_path: Path, **context: Any) -> Settings:
    return load_settings(
        None,
        backends=[{"name": "rec", "kind": "openai", "url": "http://127.0.0.1:9"},
                  {"name": "bow", "kind": "openai", "url": "http://127.0.0.1:9"}],
        models={
            "completion": {"model": "qwen2.5-coder:1.5b", "backends": ["rec"],
                           "max_prompt_tokens": 1024},
            "chat": {"model": "chat", "backends": ["rec"]},
            "embedding": {"model": "bow-64", "backends": ["bow"]},
        },
        index={"data_dir": str(tmp_path / "data"), "allowed_roots": [str(tmp_path)]},
        repo_context=context,
    )


class Rig:
    def __init__(self, tmp_path: Path, **context: Any) -> None:
        context.setdefault("timeout_ms", 10_000)  # only the timeout test races the clock
        self.settings = make_settings(tmp_path, **context)
        self.recorder = PromptRecorder()
        self.embedder = BowEmbedder()
        self.gateway = Gateway(self.settings, {"rec": self.recorder, "bow": self.embedder})
        self.service = CodebaseService(self.settings.index, self.gateway.router)
        self.gateway.retriever = RepoRetriever(self.service, self.settings.repo_context)
        self.root = tmp_path / "shop"

    async def index(self, files: dict[str, str] = REPO) -> None:
        for rel, text in files.items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)
        job = await self.service.start(str(self.root))
        await self.service.wait(job.root)

    async def prompt(self, **fim: Any) -> str:
        fim.setdefault("prefix", PREFIX)
        fim.setdefault("suffix", SUFFIX)
        fim.setdefault("path", "billing/invoice.py")
        await self.gateway.complete(FimInput(**fim))
        return self.recorder.prompts[-1]

    async def aclose(self) -> None:
        await self.service.aclose()
        await self.gateway.aclose()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path)
    await rig.index()
    yield rig
    await rig.aclose()


async def test_the_right_snippet_is_in_the_prompt_and_the_wrong_ones_are_not(rig: Rig) -> None:
    prompt = await rig.prompt()
    assert prompt == (
        "<|repo_name|>shop\n"
        "<|file_sep|>billing/tax.py\n" + REPO["billing/tax.py"]
        + "<|file_sep|>billing/invoice.py\n"
        "<|fim_prefix|>" + PREFIX + "<|fim_suffix|>" + SUFFIX + "<|fim_middle|>"
    )


async def test_absolute_paths_pick_the_repository_and_others_get_no_context(rig: Rig) -> None:
    absolute = await rig.prompt(path=str(rig.root / "billing/invoice.py"))
    # The prompt names the file relative to its repository, never by a server path.
    assert absolute.startswith("<|repo_name|>shop\n<|file_sep|>billing/tax.py\n")
    assert "<|file_sep|>billing/invoice.py\n<|fim_prefix|>" in absolute
    outside = await rig.prompt(path="/elsewhere/billing/invoice.py")
    assert outside.startswith("<|fim_prefix|>")
    escaping = await rig.prompt(path="../billing/invoice.py")
    assert "<|repo_name|>" not in escaping


async def test_client_snippets_come_first_and_duplicates_are_dropped(rig: Rig) -> None:
    declared = ContextFile("billing/tax.py", REPO["billing/tax.py"])
    clipboard = ContextFile("notes.md", "remember: VAT rounds to cents\n")
    prompt = await rig.prompt(snippets=(clipboard, declared))
    assert prompt.startswith(
        "<|repo_name|>shop\n"
        "<|file_sep|>notes.md\nremember: VAT rounds to cents\n\n"
        "<|file_sep|>billing/tax.py\n" + REPO["billing/tax.py"]
        + "\n<|file_sep|>billing/invoice.py\n<|fim_prefix|>"
    )
    assert prompt.count("def compute_vat") == 1


async def test_context_can_be_switched_off(rig: Rig) -> None:
    prompt = await rig.prompt(repo_context=False)
    assert prompt == ("<|fim_prefix|>" + PREFIX + "<|fim_suffix|>" + SUFFIX + "<|fim_middle|>")


async def test_matches_are_cached_per_cursor_region(rig: Rig) -> None:
    await rig.prompt()
    searches = rig.embedder.calls  # hybrid search embeds each query once
    typed = PREFIX + "comp"  # same region: no new search
    await rig.prompt(prefix=typed, suffix=SUFFIX[4:])
    assert rig.embedder.calls == searches
    far = "\n" * 40 + PREFIX  # another region of the file: searched again
    await rig.prompt(prefix=far)
    assert rig.embedder.calls == searches + 1


async def test_a_slow_index_never_holds_a_completion(tmp_path: Path) -> None:
    rig = Rig(tmp_path, timeout_ms=50)
    try:
        await rig.index()
        rig.embedder.gate = asyncio.Event()  # the query embedding now waits forever
        prompt = await rig.prompt()
        assert prompt.startswith("<|fim_prefix|>")
    finally:
        rig.embedder.gate = None
        await rig.aclose()


async def test_no_repository_no_context(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        prompt = await rig.prompt()
        assert prompt.startswith("<|fim_prefix|>")
    finally:
        await rig.aclose()


def _small_matches() -> Iterator[tuple[str, str]]:
    for i in range(30):
        body = f"def p{i}(net, rate_name):\n    return compute_vat(net, rate_name)\n"
        yield f"billing/p{i:02d}.py", body


@pytest.mark.parametrize("max_prompt_tokens", [512, 1024, 2048])
async def test_the_budget_holds_by_the_models_own_tokenizer(
    tmp_path: Path, tiny_gguf: TinyModelInfo, max_prompt_tokens: int
) -> None:
    settings = load_settings(
        None,
        # A generous target time: the budget under test is the route's, not one learned
        # from how fast a (possibly loaded) machine read the warm-up probe.
        backends=[{"name": "llama", "kind": "llamacpp", "model_path": str(tiny_gguf.path),
                   "target_prompt_s": 60},
                  {"name": "bow", "kind": "openai", "url": "http://127.0.0.1:9"}],
        models={
            "completion": {"model": "qwen2.5-coder-tiny", "backends": ["llama"],
                           "max_prompt_tokens": max_prompt_tokens, "max_tokens": 4},
            "chat": {"model": "chat", "backends": ["llama"]},
            "embedding": {"model": "bow-64", "backends": ["bow"]},
        },
        index={"data_dir": str(tmp_path / "data"), "allowed_roots": [str(tmp_path)]},
        # A loaded machine must not turn this into a retrieval-timeout test.
        repo_context={"max_snippets": 50, "max_per_file": 5, "timeout_ms": 10_000},
    )
    llama = LlamaCppBackend(settings.backends[0])
    await llama.check_health()  # loaded: its tokenizer counts
    gateway = Gateway(settings, {"llama": llama, "bow": BowEmbedder()})
    service = CodebaseService(settings.index, gateway.router)
    gateway.retriever = RepoRetriever(service, settings.repo_context)
    root = tmp_path / "repo"
    for rel, text in [*REPO.items(), *_small_matches()]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    try:
        await service.wait((await service.start(str(root))).root)
        plan = await gateway.plan_fim(FimInput(PREFIX, SUFFIX, path="billing/invoice.py"))
        assert plan.context, "the fixture has matches to choose from"
        context_part = plan.request.prompt.split("<|fim_prefix|>")[0]
        budget = settings.repo_context.budget(max_prompt_tokens)
        used = len(await llama.tokenize(context_part))
        assert used <= budget
        # The estimate would have been far off for this byte-level vocabulary.
        assert used > len(context_part.encode()) / 2.5
    finally:
        await service.aclose()
        await gateway.aclose()


async def test_a_team_gets_context_only_from_its_own_repositories(rig: Rig) -> None:
    path = str(rig.root / "billing/invoice.py")
    own = Principal("a1", team="alpha", repos=(str(rig.root.resolve()),))
    other = Principal("b1", team="beta", repos=("/srv/beta",))
    for principal, expect_context in ((own, True), (other, False)):
        reset = current_principal.set(principal)
        try:
            prompt = await rig.prompt(path=path)
        finally:
            current_principal.reset(reset)
        assert prompt.startswith("<|repo_name|>shop\n") is expect_context
        assert ("def compute_vat" in prompt) is expect_context
