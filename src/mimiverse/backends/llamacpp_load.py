"""Loading a GGUF with llama-cpp-python on any x86-64 CPU: llama.cpp's extra buffer
types (repacked weights; AMX tiles where the CPU has them) on or off.

llama-cpp-python 0.3.36 crashes (SIGSEGV in ggml_backend_amx_mul_mat) on the first decode
of a quantized model on CPUs with AMX; without the extra buffers the AMX kernels are
never used. Elsewhere they stay on: repacking is worth ~1.5x prompt speed
(docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import llama_cpp


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Linux reports the flags in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False


_params_lock = threading.Lock()


@contextlib.contextmanager
def extra_buffers(enabled: bool) -> Iterator[None]:
    """Load with llama.cpp's extra weight buffers on or off.

    `Llama()` builds its model parameters from `llama_model_default_params()` and offers
    no argument for `use_extra_bufts`, so while it loads, that one function answers with
    the flag set as asked (the lock keeps two loads from crossing)."""
    if enabled:
        yield
        return
    module = llama_cpp.llama_cpp
    default = module.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    with _params_lock:
        module.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            module.llama_model_default_params = default
