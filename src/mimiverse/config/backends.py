"""Backend and model-route settings: where each task's requests go, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mimiverse.config.base import StrictModel

Task = Literal["completion", "chat", "embedding"]
TASKS: tuple[Task, ...] = ("completion", "chat", "embedding")
BackendKind = Literal["ollama", "openai", "llamacpp", "sentence-transformers", "triton",
                      "whisper"]
# Backend kinds that can serve the transcription route.
SPEECH_KINDS = frozenset({"openai", "whisper"})
Balance = Literal["ordered", "least-busy", "latency"]
Family = Literal["qwen2.5-coder", "starcoder2", "deepseek-coder", "codellama", "codestral"]


class Timeouts(StrictModel):
    connect_s: float = Field(2.0, gt=0, le=60)
    first_token_s: float = Field(30.0, gt=0, le=600)
    between_tokens_s: float = Field(15.0, gt=0, le=600)
    total_s: float = Field(120.0, gt=0, le=3600)


class TritonOptions(StrictModel):
    """How a `triton` backend talks to its model (KServe v2 / Open Inference protocol)."""

    model: str | None = Field(
        None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Triton model name; default: the route's model name",
    )
    model_version: str = Field("", max_length=32, pattern=r"^[0-9]*$",
                               description="empty: the server's version policy")
    protocol: Literal["http", "grpc"] = "http"
    input_name: str = Field("TEXT", min_length=1, max_length=128, description="BYTES input")
    output_name: str = Field("EMBEDDING", min_length=1, max_length=128, description="FP32 output")
    max_batch: int = Field(
        64, ge=1, le=4096, description="texts per request when the model config does not say"
    )
    metrics_url: str | None = Field(
        None, description="Prometheus endpoint; default: the url's host, port 8002, /metrics"
    )

    @field_validator("metrics_url")
    @classmethod
    def _http_metrics(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("metrics_url must start with http:// or https://")
        return url


def _check_triton_url(name: str, url: str | None, protocol: str) -> None:
    """http: http(s)://host:port; grpc: host:port (gRPC has no scheme in tritonclient)."""
    if not url:
        raise ValueError(f"backend {name!r} (triton) needs url = "
                         + ("host:port (gRPC)" if protocol == "grpc" else "http://host:port"))
    if protocol == "http":
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"backend {name!r}: url must start with http:// or https://")
        return
    host, sep, port = url.rpartition(":")
    if "://" in url or "/" in url or not sep or not host or not port.isdigit():
        raise ValueError(f"backend {name!r}: a grpc url is host:port (no scheme), got {url!r}")


def _check_llamacpp_model(name: str, path: str | None, model: str | None) -> None:
    from mimiverse.weights.catalog import CATALOG  # data only; imports nothing back

    if bool(path) == bool(model):
        raise ValueError(f"backend {name!r} (llamacpp) needs either model_path = a GGUF file "
                         f"or model = a catalog name ({', '.join(CATALOG)})")
    if model and model not in CATALOG:
        raise ValueError(f"backend {name!r}: model {model!r} is not in the catalog; "
                         f"known: {', '.join(CATALOG)} (or set model_path to a GGUF file)")


class BackendSettings(StrictModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: BackendKind
    url: str | None = Field(None, description="base URL for HTTP backends")
    api_key: str | None = Field(None, description="sent as a Bearer token to the backend")
    model_path: str | None = Field(
        None, description="llamacpp: GGUF file; sentence-transformers, whisper: model folder"
    )
    model: str | None = Field(
        None, max_length=128,
        description="llamacpp: a catalog model (`mimiverse pull --list`), fetched on first start",
    )
    # llama.cpp's extra weight buffers (repacked weights; AMX tiles on CPUs that have AMX).
    # llama-cpp-python 0.3.36 crashes in ggml_backend_amx_mul_mat on the first decode of a
    # quantized model on AMX CPUs, so the default turns them off there only.
    extra_buffers: bool | None = Field(
        None, description="llamacpp: weight repacking; default: on, off on CPUs with AMX"
    )
    n_ctx: int = Field(4096, ge=256, le=131072, description="context size (llamacpp)")
    n_threads: int | None = Field(None, ge=1, le=256)
    max_connections: int = Field(64, ge=1, le=4096)
    # Its capacity relative to the other backends of a balanced route (2: twice the load).
    weight: float = Field(1.0, gt=0, le=1000)
    # FIM prompt size for this backend: a fixed cap, and/or the size it reads within
    # `target_prompt_s`, learned from the prompt speed it shows (llama.cpp, Ollama).
    max_prompt_tokens: int | None = Field(None, ge=64, le=131072)
    target_prompt_s: float | None = Field(
        None, gt=0, le=60, description="learn a prompt budget (llamacpp, ollama: 1.5 s)"
    )
    timeouts: Timeouts = Timeouts()
    triton: TritonOptions | None = Field(
        None, description="triton: model, tensors, protocol (defaults when absent)"
    )
    # Seconds between background readiness probes of backends that offer one (triton);
    # a failed probe takes the backend out of routing until a probe succeeds again.
    health_interval_s: float = Field(5.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _needs_location(self) -> BackendSettings:
        if self.triton is not None and self.kind != "triton":
            raise ValueError(f"backend {self.name!r}: [triton] options need kind = 'triton'")
        if self.kind == "triton":
            _check_triton_url(self.name, self.url, (self.triton or TritonOptions()).protocol)
        elif self.kind == "llamacpp":
            _check_llamacpp_model(self.name, self.model_path, self.model)
        elif self.kind == "whisper":
            if not self.model_path or self.model:
                raise ValueError(f"backend {self.name!r} (whisper) needs model_path = a "
                                 "Whisper model folder (transformers' save_pretrained layout)"
                                 + ("; model (the llamacpp catalog) does not apply"
                                    if self.model else ""))
        elif self.kind == "sentence-transformers":
            pass  # model_path optional: the packaged all-MiniLM-L6-v2 by default
        elif not self.url:
            raise ValueError(f"backend {self.name!r} ({self.kind}) needs url = http(s)://host:port")
        elif not self.url.startswith(("http://", "https://")):
            raise ValueError(f"backend {self.name!r}: url must start with http:// or https://")
        return self


Capability = Literal["completion", "insert", "tools", "vision", "thinking", "embedding"]


class ModelRoute(StrictModel):
    model: str = Field(min_length=1, max_length=256)
    family: Family | None = Field(None, description="FIM prompt family; inferred when absent")
    backends: list[str] = Field(min_length=1, max_length=16)
    # Upper bound on prompt tokens sent to the model (FIM prefix+suffix are trimmed to fit).
    max_prompt_tokens: int = Field(2048, ge=64, le=131072)
    max_tokens: int = Field(256, ge=1, le=8192, description="default and ceiling for replies")
    capabilities: list[Capability] | None = Field(
        None, description="what the model can do (Ollama's names); when unset, asked of its "
        "backends (Ollama's /api/show, a GGUF's chat template)")
    # How requests spread over `backends` (routing/balance.py): "ordered" tries them in
    # order (the next only when one fails); "least-busy" and "latency" spread the load.
    balance: Balance = "ordered"


def default_backends() -> list[BackendSettings]:
    return [
        BackendSettings(name="local-ollama", kind="ollama", url="http://127.0.0.1:11434"),
        # Without Ollama, completion and chat fall back to an embedded llama.cpp model,
        # fetched (checked against its pinned SHA-256) on first start.
        BackendSettings(name="embedded-llm", kind="llamacpp",
                        model="qwen2.5-coder-0.5b-instruct"),
        # Zero setup: embeddings (and so code search) work offline with the packaged
        # all-MiniLM-L6-v2; point models.embedding at Ollama etc. to replace it.
        BackendSettings(name="embedded", kind="sentence-transformers"),
    ]



class ModelsSettings(StrictModel):
    completion: ModelRoute = ModelRoute(
        model="qwen2.5-coder:1.5b", family="qwen2.5-coder",
        backends=["local-ollama", "embedded-llm"],
    )
    chat: ModelRoute = ModelRoute(
        model="qwen3-coder:30b", backends=["local-ollama", "embedded-llm"],
        max_prompt_tokens=16384, max_tokens=2048,
    )
    embedding: ModelRoute = ModelRoute(model="all-MiniLM-L6-v2-int8", backends=["embedded"])
    # Chats with images go here when the chat model cannot see (e.g. qwen2.5vl on Ollama),
    # and so does POST /api/ai/ui-to-code; unset: images stay with the chat model.
    vision: ModelRoute | None = None
    # Speech to text for /v1/audio/transcriptions and /api/ai/voice: OpenAI-compatible
    # speech servers (kind = "openai": whisper.cpp's server, faster-whisper servers, vLLM)
    # and/or embedded Whisper models (kind = "whisper"), tried in order.
    # Not one of TASKS: its backends speak another API, and nothing is streamed or cached.
    transcription: ModelRoute | None = None

    def route(self, task: Task) -> ModelRoute:
        route: ModelRoute = getattr(self, task)
        return route


class BreakerSettings(StrictModel):
    failures: int = Field(3, ge=1, le=100, description="consecutive failures that open it")
    cooldown_s: float = Field(30.0, ge=0, le=3600, description="before a half-open probe")
