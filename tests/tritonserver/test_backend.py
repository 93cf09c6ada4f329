"""The triton backend against a real tritonserver, over HTTP and gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from mimiverse.backends.registry import build_backend
from mimiverse.backends.triton import ModelShape, TritonBackend
from mimiverse.config import BackendSettings, load_settings
from mimiverse.errors import BackendRejected, BackendUnavailable, ConfigError
from tests.servers.harness import free_port
from tests.tritonserver.bow import bow_vector
from tests.tritonserver.server import TritonServer

TEXTS = ["def parse_config(path): return toml.load(path)", "class Cache: pass", "x = 1"]


def triton_backend(server: TritonServer, protocol: str, **options: Any) -> TritonBackend:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    config = BackendSettings(name=f"triton-{protocol}", kind="triton", url=url,
                             triton={"protocol": protocol, **options})
    backend = build_backend(config)
    assert isinstance(backend, TritonBackend)
    return backend


@pytest.fixture(params=["http", "grpc"])
async def backend(request: pytest.FixtureRequest,
                  triton_server: TritonServer) -> AsyncIterator[TritonBackend]:
    b = triton_backend(triton_server, request.param)
    try:
        yield b
    finally:
        await b.aclose()  # before the server stops: an open client delays its exit


def expected(texts: list[str]) -> list[list[float]]:
    return [bow_vector(t).tolist() for t in texts]


async def test_embeds_exact_vectors(backend: TritonBackend) -> None:
    vectors = await backend.embed_batch("bow", TEXTS)
    assert vectors == expected(TEXTS)
    assert len(vectors[0]) == 64


async def test_large_input_is_split_into_the_models_max_batch(
    backend: TritonBackend, triton_server: TritonServer
) -> None:
    texts = [f"text number {i} with word{i % 7}" for i in range(100)]
    before = len(triton_server.calls())
    vectors = await backend.embed_batch("bow", texts)
    assert vectors == expected(texts)  # in order, despite requests running concurrently
    # max_batch_size 16 from the model's config wins over the setting's default (64).
    assert (await backend.model_shape("bow")).max_batch == 16
    assert sorted(triton_server.calls()[before:]) == [4, 16, 16, 16, 16, 16, 16]


async def test_unbatched_model_takes_a_flat_tensor_and_the_settings_max_batch(
    triton_server: TritonServer,
) -> None:
    backend = triton_backend(triton_server, "grpc", max_batch=2)
    try:
        texts = [f"word{i} shared" for i in range(5)]
        before = len(triton_server.calls())
        assert await backend.embed_batch("bow-flat", texts) == expected(texts)
        # max_batch_size 0 in its config: [n] tensors of at most the setting's 2 texts.
        assert await backend.model_shape("bow-flat") == ModelShape(input_rank=1, max_batch=2)
        assert sorted(triton_server.calls()[before:]) == [1, 2, 2]
    finally:
        await backend.aclose()


async def test_probe_and_metadata(backend: TritonBackend) -> None:
    await backend.probe(["bow"])
    meta = await backend.model_metadata("bow")
    assert meta == {
        "name": "bow", "platform": "python", "versions": ["1"],
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, 64]}],
    }
    with pytest.raises(BackendUnavailable, match="model 'nope' is not ready"):
        await backend.probe(["nope"])


async def test_unknown_model_is_rejected(backend: TritonBackend) -> None:
    with pytest.raises(BackendRejected) as caught:
        await backend.embed_batch("no-such-model", ["x"])
    assert "no-such-model" in str(caught.value)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_wrong_tensor_names_say_what_the_model_has(
    triton_server: TritonServer, protocol: str
) -> None:
    backend = triton_backend(triton_server, protocol, input_name="INPUT_TEXT")
    try:
        with pytest.raises(BackendRejected,
                           match="has no input 'INPUT_TEXT'; its inputs: TEXT"):
            await backend.embed_batch("bow", ["x"])
    finally:
        await backend.aclose()
    backend = triton_backend(triton_server, protocol, output_name="VECTORS")
    try:
        with pytest.raises(BackendRejected, match="has no output 'VECTORS'; its outputs: EMB"):
            await backend.embed_batch("bow", ["x"])
    finally:
        await backend.aclose()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_unreachable_server_is_unavailable(protocol: str) -> None:
    port = free_port()
    url = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"
    backend = build_backend(BackendSettings(name="gone", kind="triton", url=url,
                                            triton={"protocol": protocol}))
    assert isinstance(backend, TritonBackend)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await backend.embed_batch("bow", ["x"])
        assert caught.value.backend == "gone"
        with pytest.raises(BackendUnavailable):
            await backend.probe(["bow"])
    finally:
        await backend.aclose()


def test_vectors_keep_numpy_float32_values() -> None:
    # What the exact comparisons above rely on: float32 -> Python float is lossless.
    v = bow_vector("a b c")
    assert v.dtype == np.float32 and v.tolist() == [float(x) for x in v]


@pytest.mark.parametrize(("backend_cfg", "message"), [
    ({"kind": "triton"}, "needs url = http://host:port"),
    ({"kind": "triton", "triton": {"protocol": "grpc"}}, r"needs url = host:port \(gRPC\)"),
    ({"kind": "triton", "url": "http://h:8001", "triton": {"protocol": "grpc"}},
     "a grpc url is host:port"),
    ({"kind": "triton", "url": "h:8000"}, "url must start with http:// or https://"),
    ({"kind": "ollama", "url": "http://h:1", "triton": {}}, "options need kind = 'triton'"),
    ({"kind": "triton", "url": "http://h:1", "triton": {"protocol": "tcp"}}, "protocol"),
    ({"kind": "triton", "url": "http://h:1", "triton": {"max_batch": 0}}, "max_batch"),
    ({"kind": "triton", "url": "http://h:1", "triton": {"metrics_url": "h:8002"}},
     "metrics_url must start with http"),
])
def test_settings_refuse_bad_triton_config(backend_cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, backends=[{"name": "t", **backend_cfg}])


def test_metrics_url_defaults_to_port_8002_of_the_same_host() -> None:
    http = TritonBackend(BackendSettings(name="a", kind="triton", url="https://gpu1:8000"))
    grpc = TritonBackend(BackendSettings(name="b", kind="triton", url="gpu2:8001",
                                         triton={"protocol": "grpc"}))
    assert (http.metrics_url, grpc.metrics_url) == (
        "https://gpu1:8002/metrics", "http://gpu2:8002/metrics")
