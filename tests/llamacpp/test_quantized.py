"""A quantized model through the embedded backend: the kernels real GGUFs use.

llama-cpp-python 0.3.36 crashed (SIGSEGV in ggml_backend_amx_mul_mat) on the first
decode of a quantized model on CPUs with AMX, while the f16 tiny model ran fine: the
tests never reached a quantized kernel. These do, in a child process, so a crash fails
the test with its signal instead of killing the test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (mimiverse[llamacpp])")

import gguf
import llama_cpp

from mimiverse.backends.llamacpp import LlamaCppBackend
from mimiverse.config import BackendSettings
from tests.llamacpp.conftest import FIM_PROMPT
from tests.support.tiny_gguf import TinyModelInfo

_GENERATE = textwrap.dedent("""
    import asyncio, json, sys
    from mimiverse.backends.base import GenerateRequest
    from mimiverse.backends.llamacpp import LlamaCppBackend
    from mimiverse.config import BackendSettings

    async def main():
        extra = json.loads(sys.argv[3])
        config = BackendSettings(name="q", kind="llamacpp", model_path=sys.argv[1],
                                 n_ctx=512, extra_buffers=extra)
        backend = LlamaCppBackend(config)
        request = GenerateRequest(model="q", prompt=sys.argv[2], max_tokens=12)
        deltas = [d async for d in backend.stream_generate(request)]
        await backend.aclose()
        print(json.dumps({"text": "".join(d.text for d in deltas),
                          "tokens": deltas[-1].completion_tokens,
                          "finish": deltas[-1].finish_reason}))

    asyncio.run(main())
""")


def generate(path: object, extra_buffers: bool | None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(path), FIM_PROMPT, json.dumps(extra_buffers)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize("extra_buffers", [None, True, False],
                         ids=["default", "extra-buffers-on", "extra-buffers-off"])
def test_a_q4_0_model_generates(tiny_q4_gguf: TinyModelInfo, extra_buffers: bool | None) -> None:
    answer = generate(tiny_q4_gguf.path, extra_buffers)
    assert answer["tokens"] == 12 and answer["finish"] == "length"
    text = str(answer["text"])
    assert text and all(0x20 <= ord(c) <= 0x7E for c in text)


def test_quantized_layers_are_quantized(tiny_q4_gguf: TinyModelInfo) -> None:
    reader = gguf.GGUFReader(tiny_q4_gguf.path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert types["blk.1.attn_q.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert types["output.weight"] == gguf.GGMLQuantizationType.F16


@pytest.mark.parametrize("extra_buffers", [True, False])
async def test_the_model_is_loaded_with_extra_buffers_as_configured(
    tiny_q4_gguf: TinyModelInfo, extra_buffers: bool
) -> None:
    config = BackendSettings(name="q", kind="llamacpp", model_path=str(tiny_q4_gguf.path),
                             n_ctx=512, extra_buffers=extra_buffers)
    backend = LlamaCppBackend(config)
    try:
        await backend.check_health()
        assert backend._llm is not None
        assert backend._llm.model_params.use_extra_bufts is extra_buffers
    finally:
        await backend.aclose()
    # Only that load saw the changed default.
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True
