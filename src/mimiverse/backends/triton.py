"""NVIDIA Triton Inference Server as an embedding backend (KServe v2 / Open Inference).

Texts go in as one BYTES tensor, vectors come out as FP32 [batch, dim]. The tensor names
are settings (`[backends.triton]` input_name / output_name, default TEXT / EMBEDDING: what
`mimiverse triton prepare` builds); the input's rank comes from the model's metadata
([batch, 1] or [batch]) and the largest request from its config (`max_batch_size`), so a
large input is cut into requests the model accepts.

Both protocols go through tritonclient's asyncio clients (`protocol = "http"` or "grpc");
their failures, and those of aiohttp and grpc underneath, become our errors in one place
(`_mapped_errors`). `probe()` is the readiness check the router's health loop runs:
/v2/health/ready, then /v2/models/<name>/ready for each model the routes ask of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import aiohttp
import grpc
import numpy as np
import tritonclient.grpc.aio as grpc_client
import tritonclient.http.aio as http_client
from tritonclient.utils import InferenceServerException

from mimiverse.backends.base import Backend, Passthrough
from mimiverse.config import BackendSettings, Task, TritonOptions
from mimiverse.errors import (
    BackendError,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)

METRICS_PORT = 8002  # tritonserver's default --metrics-port
# Requests of one embed call in flight at once: enough to keep a GPU's queue fed, few
# enough that one large indexing batch does not crowd out a query behind it.
MAX_IN_FLIGHT = 4

# gRPC status codes that say the server cannot answer now (retry elsewhere), as opposed
# to "this request is wrong" (rejected).
_GRPC_UNAVAILABLE = frozenset({
    "UNAVAILABLE", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED",
})
_GRPC_REJECTED_STATUS = {"NOT_FOUND": 404, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What one Triton model needs from a request, read from its metadata and config."""

    input_rank: int  # 2: [batch, 1]; 1: [batch]
    max_batch: int


class _Client(Protocol):
    """The calls this backend makes, the same for both protocols."""

    async def server_ready(self) -> bool: ...
    async def model_ready(self, model: str, version: str) -> bool: ...
    async def metadata(self, model: str, version: str) -> dict[str, Any]: ...
    async def config(self, model: str, version: str) -> dict[str, Any]: ...
    async def infer(self, model: str, version: str, name: str, data: np.ndarray,
                    output: str) -> Any: ...
    async def close(self) -> None: ...


class _HttpClient:
    def __init__(self, url: str, total_s: float) -> None:
        parts = urlsplit(url)
        self._client = http_client.InferenceServerClient(
            parts.netloc, conn_timeout=total_s, ssl=parts.scheme == "https"
        )

    async def server_ready(self) -> bool:
        return bool(await self._client.is_server_ready())

    async def model_ready(self, model: str, version: str) -> bool:
        return bool(await self._client.is_model_ready(model, version))

    async def metadata(self, model: str, version: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._client.get_model_metadata(model, version)
        return body

    async def config(self, model: str, version: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._client.get_model_config(model, version)
        return body

    async def infer(self, model: str, version: str, name: str, data: np.ndarray,
                    output: str) -> Any:
        tensor = http_client.InferInput(name, list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data, binary_data=True)
        wanted = [http_client.InferRequestedOutput(output, binary_data=True)]
        result = await self._client.infer(model, [tensor], version, outputs=wanted)
        return result.as_numpy(output)

    async def close(self) -> None:
        await self._client.close()


class _GrpcClient:
    def __init__(self, url: str, total_s: float) -> None:
        self._client = grpc_client.InferenceServerClient(url)
        self._timeout = total_s

    async def server_ready(self) -> bool:
        return bool(await self._client.is_server_ready(client_timeout=self._timeout))

    async def model_ready(self, model: str, version: str) -> bool:
        return bool(await self._client.is_model_ready(model, version,
                                                      client_timeout=self._timeout))

    async def metadata(self, model: str, version: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._client.get_model_metadata(
            model, version, as_json=True, client_timeout=self._timeout)
        return body

    async def config(self, model: str, version: str) -> dict[str, Any]:
        body = await self._client.get_model_config(model, version, as_json=True,
                                                   client_timeout=self._timeout)
        config: dict[str, Any] = body.get("config", {})
        return config

    async def infer(self, model: str, version: str, name: str, data: np.ndarray,
                    output: str) -> Any:
        tensor = grpc_client.InferInput(name, list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        wanted = [grpc_client.InferRequestedOutput(output)]
        result = await self._client.infer(model, [tensor], version, outputs=wanted,
                                          client_timeout=self._timeout)
        return result.as_numpy(output)

    async def close(self) -> None:
        await self._client.close()


class TritonBackend(Backend):
    kind: ClassVar[str] = "triton"
    tasks: ClassVar[frozenset[Task]] = frozenset({"embedding"})

    def __init__(self, config: BackendSettings) -> None:
        super().__init__(config)
        self.options: TritonOptions = config.triton or TritonOptions()
        self.url = (config.url or "").rstrip("/")
        self.metrics_url = self.options.metrics_url or _default_metrics_url(
            self.url, self.options.protocol)
        self._client: _Client | None = None
        self._metrics_session: aiohttp.ClientSession | None = None
        self._shapes: dict[str, ModelShape] = {}
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    # -- what the router calls ---------------------------------------------------------

    def triton_model(self, model: str) -> str:
        """The Triton model that serves the route's `model`: the setting, else that name."""
        return self.options.model or model

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        if not texts:
            return []
        name = self.triton_model(model)
        shape = await self.model_shape(name)
        parts = [texts[i:i + shape.max_batch] for i in range(0, len(texts), shape.max_batch)]
        try:
            answers = await asyncio.gather(*(self._infer(name, shape, p) for p in parts))
        except BackendError:
            self._shapes.pop(name, None)  # the model may have been reloaded differently
            raise
        return [vector for answer in answers for vector in answer]

    async def probe(self, models: Sequence[str]) -> None:
        """Ready to serve: the server says ready, and so does each model asked of it."""
        with self._mapped_errors():
            if not await self.client.server_ready():
                raise BackendUnavailable(f"{self.url}: server is not ready", backend=self.name)
            for name in dict.fromkeys(self.triton_model(m) for m in models):
                if not await self.client.model_ready(name, self.options.model_version):
                    raise BackendUnavailable(f"model {name!r} is not ready", backend=self.name)

    async def check_health(self) -> None:
        await self.probe([self.options.model] if self.options.model else [])

    async def list_models(self) -> list[str]:
        return [self.options.model] if self.options.model else []

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._metrics_session is not None and not self._metrics_session.closed:
            await self._metrics_session.close()

    # -- what /api/triton shows --------------------------------------------------------

    async def model_metadata(self, name: str) -> dict[str, Any]:
        """The model's platform, versions, inputs and outputs (shapes as ints)."""
        with self._mapped_errors():
            body = await self.client.metadata(name, self.options.model_version)
        return {
            "name": body.get("name", name),
            "platform": body.get("platform", ""),
            "versions": [str(v) for v in body.get("versions", [])],
            "inputs": [_tensor(t) for t in body.get("inputs", [])],
            "outputs": [_tensor(t) for t in body.get("outputs", [])],
        }

    async def metrics_text(self) -> str:
        """Triton's Prometheus exposition, from its metrics port."""
        if self._metrics_session is None or self._metrics_session.closed:
            t = self.config.timeouts
            self._metrics_session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s),
                trust_env=False,
            )
        with self._mapped_errors():
            async with self._metrics_session.get(self.metrics_url) as response:
                text = await response.text()
                if response.status != 200:
                    raise BackendUnavailable(
                        f"{self.metrics_url}: HTTP {response.status}", backend=self.name)
                return text

    # -- plumbing ----------------------------------------------------------------------

    @property
    def client(self) -> _Client:
        # Created on first use, inside the event loop that serves requests.
        if self._client is None:
            total = self.config.timeouts.total_s
            self._client = (_GrpcClient(self.url, total) if self.options.protocol == "grpc"
                            else _HttpClient(self.url, total))
        return self._client

    async def model_shape(self, name: str) -> ModelShape:
        """The input rank and largest batch of model `name`, asked once and remembered."""
        shape = self._shapes.get(name)
        if shape is None:
            version = self.options.model_version
            with self._mapped_errors():
                metadata = await self.client.metadata(name, version)
                config = await self.client.config(name, version)
            shape = self._shapes[name] = self._shape_of(name, metadata, config)
        return shape

    def _shape_of(self, name: str, metadata: dict[str, Any],
                  config: dict[str, Any]) -> ModelShape:
        inputs = {t.get("name"): t for t in metadata.get("inputs", [])}
        outputs = {t.get("name") for t in metadata.get("outputs", [])}
        wanted = self.options.input_name
        if wanted not in inputs:
            raise BackendRejected(
                f"model {name!r} has no input {wanted!r}; its inputs: "
                f"{', '.join(map(str, inputs)) or 'none'} (set [triton] input_name)",
                backend=self.name, status_code=400)
        if self.options.output_name not in outputs:
            raise BackendRejected(
                f"model {name!r} has no output {self.options.output_name!r}; its outputs: "
                f"{', '.join(map(str, outputs)) or 'none'} (set [triton] output_name)",
                backend=self.name, status_code=400)
        tensor = inputs[wanted]
        if tensor.get("datatype") != "BYTES":
            raise BackendRejected(
                f"model {name!r} input {wanted!r} is {tensor.get('datatype')}, not BYTES (text)",
                backend=self.name, status_code=400)
        rank = len(tensor.get("shape", []))
        if rank not in (1, 2):
            raise BackendRejected(
                f"model {name!r} input {wanted!r} has shape {tensor.get('shape')}; "
                "expected [batch] or [batch, 1]", backend=self.name, status_code=400)
        model_max = int(config.get("max_batch_size", 0) or 0)
        return ModelShape(rank, model_max if model_max > 0 else self.options.max_batch)

    async def _infer(self, name: str, shape: ModelShape,
                     texts: Sequence[str]) -> list[list[float]]:
        data = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
        if shape.input_rank == 2:
            data = data.reshape(len(texts), 1)
        async with self._in_flight:
            with self._mapped_errors():
                out = await self.client.infer(name, self.options.model_version,
                                              self.options.input_name, data,
                                              self.options.output_name)
        return _vectors(out, len(texts), backend=self.name)

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Translate tritonclient, grpc and aiohttp failures into our tree (only here)."""
        try:
            yield
        except BackendError:
            raise
        except InferenceServerException as exc:
            raise self._server_error(exc) from exc
        except grpc.RpcError as exc:  # raised by grpc itself, not wrapped by tritonclient
            code = getattr(exc, "code", lambda: None)()
            raise self._server_error(InferenceServerException(
                msg=str(exc), status=str(code))) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise BackendTimeout(f"timed out ({type(exc).__name__})", backend=self.name) from exc
        except aiohttp.ClientConnectorError as exc:
            raise BackendUnavailable(
                f"cannot reach {self.url}: {exc.os_error or exc}", backend=self.name) from exc
        except (aiohttp.ClientError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            raise BackendUnavailable(f"{self.url}: {why}", backend=self.name) from exc
        except (KeyError, TypeError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise BackendProtocolError(f"unexpected response: {exc}",
                                       backend=self.name) from exc

    def _server_error(self, exc: InferenceServerException) -> BackendError:
        status = str(exc.status() or "")
        why = _first_line(exc.message() or str(exc))
        code = status.removeprefix("StatusCode.")
        if code == "DEADLINE_EXCEEDED":
            return BackendTimeout(f"deadline exceeded: {why}", backend=self.name)
        if code in _GRPC_UNAVAILABLE:
            return BackendUnavailable(f"gRPC {code}: {why}", backend=self.name)
        if status.startswith("StatusCode."):
            return BackendRejected(f"gRPC {code}: {why}", backend=self.name,
                                   status_code=_GRPC_REJECTED_STATUS.get(code, 400))
        if status.isdigit():
            number = int(status)
            if number >= 500 or number == 429:
                return BackendUnavailable(f"HTTP {number}: {why}", backend=self.name)
            return BackendRejected(f"HTTP {number}: {why}", backend=self.name,
                                   status_code=number)
        return BackendUnavailable(why or "tritonclient failed", backend=self.name)


def _vectors(out: Any, count: int, *, backend: str) -> list[list[float]]:
    """`out` as `count` finite float vectors: [count, dim] FP32 (a [count, 1, dim] output of
    a model that kept the text's unit axis is accepted too)."""
    if not isinstance(out, np.ndarray):
        raise BackendProtocolError("the response holds no output tensor", backend=backend)
    if out.ndim == 3 and out.shape[1] == 1:
        out = out[:, 0, :]
    if out.ndim != 2 or out.shape[0] != count or out.shape[1] == 0:
        raise BackendProtocolError(
            f"expected {count} embeddings as [batch, dim], got shape {list(out.shape)}",
            backend=backend)
    if out.dtype != np.float32:
        raise BackendProtocolError(f"expected FP32 embeddings, got {out.dtype}",
                                   backend=backend)
    if not np.isfinite(out).all():
        raise BackendProtocolError("embeddings hold NaN or infinity", backend=backend)
    vectors: list[list[float]] = out.tolist()
    return vectors


def _tensor(spec: dict[str, Any]) -> dict[str, Any]:
    # gRPC's JSON writes int64 dims as strings; HTTP as numbers.
    return {"name": spec.get("name", ""), "datatype": spec.get("datatype", ""),
            "shape": [int(d) for d in spec.get("shape", [])]}


def _default_metrics_url(url: str, protocol: str) -> str:
    host = (urlsplit(url).hostname if protocol == "http" else url.rpartition(":")[0]) or ""
    scheme = "https" if url.startswith("https://") else "http"
    if ":" in host:
        host = f"[{host.strip('[]')}]"  # an IPv6 literal
    return f"{scheme}://{host}:{METRICS_PORT}/metrics"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."
