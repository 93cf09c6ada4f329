"""`mimiverse triton prepare`: the repository's configs parse as Triton's ModelConfig, its
tokenizer model and ONNX encoder give the embedded model's vectors, and so does a real
tritonserver running them behind our triton backend."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from mimiverse.backends.sentence_transformers import SentenceTransformersBackend
from mimiverse.backends.triton import TritonBackend
from mimiverse.cli.main import app
from mimiverse.config import BackendSettings
from tests.tritonserver.server import TritonServer

NAME = "all-MiniLM-L6-v2"
TOKENS = ("input_ids", "attention_mask", "token_type_ids")
LONG = "\n".join(f"def handler_{i}(request, response):\n    return request.get('k{i}')"
                 for i in range(60))  # well past the model's 256 tokens
SAMPLES = [
    "def add(a, b):\n    return a + b",
    "class LRUCache:\n    def __init__(self, capacity: int) -> None:\n"
    "        self.capacity = capacity\n        self.items: dict[str, bytes] = {}",
    "SELECT id, name FROM users WHERE created_at > now() - interval '30 days';",
    "how do I retry a failed HTTP request with exponential backoff",
    "x",
    LONG,
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model-repo")
    result = CliRunner().invoke(app, ["triton", "prepare", "--out", str(out),
                                      "--max-batch", "8"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: {NAME} (ensemble)" in result.output
    assert '[models.embedding]\nmodel = "all-MiniLM-L6-v2"' in result.output
    return out


@pytest.fixture(scope="module")
def tokenizer_module(repo: Path) -> Iterator[types.ModuleType]:
    path = repo / f"{NAME}-tokenizer" / "1" / "model.py"
    spec = importlib.util.spec_from_file_location("prepared_tokenizer_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


@pytest.fixture(scope="module")
def reference() -> list[list[float]]:
    """The embedded backend's fp32 vectors of SAMPLES (the model name Triton serves)."""
    import asyncio

    async def embed() -> list[list[float]]:
        backend = SentenceTransformersBackend(
            BackendSettings(name="embedded", kind="sentence-transformers"), engine="onnx")
        try:
            return await backend.embed_batch(NAME, SAMPLES)
        finally:
            await backend.aclose()

    return asyncio.run(embed())


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def parsed(path: Path) -> Any:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_configs_parse_and_name_the_right_tensors(repo: Path) -> None:
    types_ = model_config_pb2.DataType
    ensemble = parsed(repo / NAME / "config.pbtxt")
    tokenizer = parsed(repo / f"{NAME}-tokenizer" / "config.pbtxt")
    encoder = parsed(repo / f"{NAME}-encoder" / "config.pbtxt")
    assert (ensemble.name, ensemble.platform, ensemble.max_batch_size) == (NAME, "ensemble", 8)
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.input] == [
        ("TEXT", types_.TYPE_STRING, [1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.output] == [
        ("EMBEDDING", types_.TYPE_FP32, [384])]
    first, second = ensemble.ensemble_scheduling.step
    assert first.model_name == f"{NAME}-tokenizer" and dict(first.input_map) == {"TEXT": "TEXT"}
    assert dict(first.output_map) == {t: t for t in TOKENS}
    assert second.model_name == f"{NAME}-encoder" and dict(second.input_map) == {
        t: t for t in TOKENS}
    assert dict(second.output_map) == {"EMBEDDING": "EMBEDDING"}

    assert (tokenizer.backend, tokenizer.max_batch_size) == ("python", 8)
    assert tokenizer.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in tokenizer.output] == [
        (t, types_.TYPE_INT64, [-1]) for t in TOKENS]

    assert (encoder.platform, encoder.max_batch_size) == ("onnxruntime_onnx", 8)
    assert encoder.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [(t.name, t.data_type, list(t.dims)) for t in encoder.input] == [
        (t, types_.TYPE_INT64, [-1]) for t in TOKENS]
    assert encoder.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    # The ONNX file's own tensors are the ones the config names.
    session = ort.InferenceSession(str(repo / f"{NAME}-encoder" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(TOKENS)
    assert [(o.name, o.shape[1]) for o in session.get_outputs()] == [("EMBEDDING", 384)]


def test_onnx_encoder_gives_the_embedded_models_vectors(
    repo: Path, tokenizer_module: types.ModuleType, reference: list[list[float]]
) -> None:
    folder = repo / f"{NAME}-tokenizer" / "1"
    tokenizer = tokenizer_module.load_tokenizer(folder)
    feeds = tokenizer_module.tokenize(tokenizer, SAMPLES)  # one padded batch
    assert feeds["input_ids"].shape == (len(SAMPLES), 256)  # LONG is cut at 256 tokens
    session = ort.InferenceSession(str(repo / f"{NAME}-encoder" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    (vectors,) = session.run(["EMBEDDING"], feeds)
    assert vectors.dtype == np.float32 and vectors.shape == (len(SAMPLES), 384)
    for got, want in zip(vectors, reference, strict=True):
        assert math.isclose(float(np.linalg.norm(got)), 1.0, abs_tol=1e-5)
        assert cosine(got, want) >= 0.99


class _FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _FakeResponse:
    def __init__(self, output_tensors: list[_FakeTensor]) -> None:
        self.output_tensors = output_tensors


def test_python_model_runs_against_the_backend_utils(
    repo: Path, tokenizer_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TritonPythonModel glue, with the few pb_utils calls it makes stood in for."""
    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor = _FakeTensor  # type: ignore[attr-defined]
    utils.InferenceResponse = _FakeResponse  # type: ignore[attr-defined]
    utils.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    model = tokenizer_module.TritonPythonModel()
    model.initialize({})
    texts = [["def f(): pass", "x"], ["naïve café ☕"]]
    requests = [{"TEXT": _FakeTensor("TEXT", np.array([[t.encode()] for t in batch],
                                                       dtype=np.object_))}
                for batch in texts]
    responses = model.execute(requests)
    assert len(responses) == 2
    for response, batch in zip(responses, texts, strict=True):
        expected = tokenizer_module.tokenize(model.tokenizer, batch)
        assert [t.name for t in response.output_tensors] == list(TOKENS)
        for tensor in response.output_tensors:
            assert tensor.array.dtype == np.int64
            assert np.array_equal(tensor.array, expected[tensor.name])
    assert responses[0].output_tensors[0].array[0][0] == 101  # [CLS]


@pytest.fixture
async def served(repo: Path, tmp_path: Path) -> AsyncIterator[TritonBackend]:
    server = TritonServer(tmp_path / "triton", "--repo", str(repo), "--repo-model", NAME,
                          "--repo-dim", "384", "--max-batch", "8", ready_models=(NAME,))
    server.start()
    backend = TritonBackend(BackendSettings(name="gpu", kind="triton", url=server.http_url,
                                            triton={"model": NAME}))
    try:
        yield backend
    finally:
        await backend.aclose()
        server.stop()


async def test_served_by_tritonserver_end_to_end(
    served: TritonBackend, reference: list[list[float]]
) -> None:
    vectors = await served.embed_batch("any-route-name", SAMPLES * 2)  # 12 texts: 2 requests
    assert len(vectors) == 12
    for got, want in zip(vectors, reference * 2, strict=True):
        assert cosine(got, want) >= 0.99
