"""Settings: one object, built from an optional TOML file, then MIMIVERSE_* env vars.

Precedence (highest first): keyword arguments, environment (`MIMIVERSE_SERVER__PORT=...`,
nested with `__`), the TOML file named by `--config` / `MIMIVERSE_CONFIG`, defaults.
Nothing is read at import time: `load_settings()` is called by the CLI and by tests.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mimiverse.errors import ConfigError
from mimiverse.security import Principal, is_loopback, token_digest

Task = Literal["completion", "chat", "embedding"]
TASKS: tuple[Task, ...] = ("completion", "chat", "embedding")
BackendKind = Literal["ollama", "openai", "llamacpp", "sentence-transformers", "triton",
                      "whisper"]
# Backend kinds that can serve the transcription route.
SPEECH_KINDS = frozenset({"openai", "whisper"})
Balance = Literal["ordered", "least-busy", "latency"]
Family = Literal["qwen2.5-coder", "starcoder2", "deepseek-coder", "codellama", "codestral"]

_config_file: ContextVar[Path | None] = ContextVar("mimiverse_config_file", default=None)


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: refuse them with the field name.
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    connect_s: float = Field(2.0, gt=0, le=60)
    first_token_s: float = Field(30.0, gt=0, le=600)
    between_tokens_s: float = Field(15.0, gt=0, le=600)
    total_s: float = Field(120.0, gt=0, le=3600)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=0, le=65535)
    # Processes serving the port (`serve --workers`); each has its own event loop and
    # memory cache. More than one: use the Redis cache and the PostgreSQL index to share.
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One JSON line per request on stdout (mimiverse.access): never code, prompts or tokens.
    access_log: bool = True
    # Host names served besides localhost, 127.0.0.1, [::1] and `host` ("*": any). Other
    # Host headers get 421: a DNS-rebinding page cannot reach the gateway by its own name.
    allowed_hosts: list[str] = Field(default_factory=list, max_length=256)
    # Browser origins allowed to call the API (CORS); empty: none, and no CORS headers.
    cors_origins: list[str] = Field(default_factory=list, max_length=256)
    # Request line plus headers; more gets 431 before the request reaches the app.
    max_header_bytes: int = Field(32 * 1024, ge=4096, le=1024 * 1024)
    # A streamed answer whose reader takes no bytes for this long is dropped (upstream too).
    write_idle_timeout_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r}: list each origin as http(s)://host[:port]")
        return origins


def _split_tokens(value: Any) -> Any:
    """MIMIVERSE_AUTH_TOKENS="a,b" -> ["a", "b"]."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


class _Tokens(_Strict):
    """Tokens in clear (kept as SecretStr) and/or as SHA-256 digests; only digests are
    compared, each in constant time (security.SecurityGate)."""

    tokens: list[SecretStr] = Field(default_factory=list, max_length=1024)
    token_sha256: list[str] = Field(
        default_factory=list, max_length=1024, description="hex SHA-256 of each token"
    )
    _digests: tuple[bytes, ...] = PrivateAttr(default=())

    _split = field_validator("tokens", mode="before")(_split_tokens)

    @field_validator("tokens")
    @classmethod
    def _long_enough(cls, tokens: list[SecretStr]) -> list[SecretStr]:
        if any(len(t.get_secret_value()) < 16 for t in tokens):
            raise ValueError("each token needs at least 16 characters")
        return tokens

    @field_validator("token_sha256")
    @classmethod
    def _hex_digests(cls, digests: list[str]) -> list[str]:
        for d in digests:
            if len(d) != 64 or any(c not in "0123456789abcdefABCDEF" for c in d):
                raise ValueError("each token_sha256 entry is 64 hex digits (sha256sum)")
        return [d.lower() for d in digests]

    @model_validator(mode="after")
    def _hash_tokens(self) -> _Tokens:
        self._digests = tuple(
            [token_digest(t.get_secret_value()) for t in self.tokens]
            + [bytes.fromhex(d) for d in self.token_sha256]
        )
        return self

    @property
    def digests(self) -> tuple[bytes, ...]:
        return self._digests


class TeamSettings(_Tokens):
    """A tenant: its tokens see only its own cache entries and its own repositories."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    repos: list[str] = Field(
        default_factory=list, max_length=256,
        description="folders this team may index and search (absolute paths)",
    )

    @field_validator("repos")
    @classmethod
    def _absolute(cls, repos: list[str]) -> list[str]:
        for repo in repos:
            if not Path(repo).is_absolute():
                raise ValueError(f"{repo!r}: list each repository folder as an absolute path")
        return repos


class AuthSettings(_Tokens):
    """API tokens; none configured: no authentication (then bind to loopback only).

    Tokens listed here see everything; tokens of a `[[auth.teams]]` entry are scoped.
    """

    teams: list[TeamSettings] = Field(default_factory=list, max_length=256)

    @field_validator("teams")
    @classmethod
    def _unique_teams(cls, teams: list[TeamSettings]) -> list[TeamSettings]:
        names = [t.name for t in teams]
        if len(set(names)) != len(names):
            raise ValueError("team names must be unique")
        return teams

    @model_validator(mode="after")
    def _one_owner_per_token(self) -> AuthSettings:
        owners = [self.digests, *(t.digests for t in self.teams)]
        every = [d for digests in owners for d in digests]
        if len(set(every)) != len(every):
            raise ValueError("a token is listed twice (in [auth] or in two teams)")
        return self

    @property
    def any_tokens(self) -> bool:
        return bool(self.digests) or any(t.digests for t in self.teams)

    def principals(self) -> dict[bytes, Principal]:
        """Each token's digest -> who it is (its team and repositories, if any)."""
        found = {d: Principal.for_digest(d) for d in self.digests}
        for team in self.teams:
            repos = [str(Path(r).resolve()) for r in team.repos]  # as indexed roots are kept
            found.update({d: Principal.for_digest(d, team.name, repos) for d in team.digests})
        return found


class LimitsSettings(_Strict):
    """What one client (an API token; all callers together when no tokens are set) may
    take. Over a limit: 429 with Retry-After. Health and metrics are never limited."""

    requests_per_minute: int = Field(0, ge=0, le=1_000_000, description="0: no rate limit")
    burst: int | None = Field(None, ge=1, le=100_000, description="default: a tenth of a minute")
    max_concurrent: int = Field(64, ge=1, le=10_000, description="requests in flight")
    max_queue: int = Field(256, ge=0, le=100_000, description="waiting for a slot; more: 429")
    queue_timeout_s: float = Field(10.0, gt=0, le=600, description="longest wait in the queue")


class TritonOptions(_Strict):
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


class BackendSettings(_Strict):
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


class ModelRoute(_Strict):
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


def _default_backends() -> list[BackendSettings]:
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


DEFAULT_BACKENDS = ("local-ollama", "embedded-llm", "embedded")


class ModelsSettings(_Strict):
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


class VoiceSettings(_Strict):
    """Limits on audio sent for transcription (over them: 413 for size, 422 for length)."""

    max_audio_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Checked where the container says how long it is (WAV, MP3, Ogg, FLAC, MP4/M4A).
    max_audio_seconds: float = Field(120.0, gt=0, le=3600)


class BreakerSettings(_Strict):
    failures: int = Field(3, ge=1, le=100, description="consecutive failures that open it")
    cooldown_s: float = Field(30.0, ge=0, le=3600, description="before a half-open probe")


class CacheSettings(_Strict):
    kind: Literal["memory", "redis"] = "memory"
    url: str = Field("redis://127.0.0.1:6379/0", description="for kind = redis")
    ttl_s: float = Field(3600.0, gt=0, le=30 * 86400)
    max_entries: int = Field(10_000, ge=1, le=10_000_000, description="memory")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="memory")
    key_prefix: str = Field("mimiverse:", max_length=64, description="redis; scopes clear()")
    # Completions and chat are cached only when deterministic: temperature 0 or a fixed seed.
    cache_seeded: bool = Field(True, description="treat a request with a seed as deterministic")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


def default_data_dir() -> str:
    """Mimiverse's per-user data folder: $XDG_DATA_HOME/mimiverse, else
    ~/.local/share/mimiverse (the platform's equivalent on macOS and Windows)."""
    import platformdirs

    return platformdirs.user_data_dir("mimiverse", appauthor=False)


class IndexSettings(_Strict):
    store: Literal["sqlite", "postgres"] = "sqlite"
    # Never inside the indexed folder: what a repository holds must not decide what its
    # index says, and indexing must not write into folders it only reads.
    data_dir: str = Field(default_factory=default_data_dir,
                          description="sqlite: one index per repository under indexes/")
    url: str | None = Field(None, description="postgres: postgresql://user@host/db")
    max_file_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    embed_batch: int = Field(32, ge=1, le=1024)
    # Hybrid ranking (index/fusion.py, index/ranking.py; measured by bench/search_quality.py).
    fusion: Literal["score", "rrf"] = Field(
        "score", description="score: min-max normalised scores, weighted; rrf: reciprocal ranks"
    )
    rrf_k: int = Field(60, ge=1, le=1000, description="rrf only")
    lexical_weight: float = Field(1.0, ge=0, le=10)
    vector_weight: float = Field(1.3, ge=0, le=10)
    symbol_boost: float = Field(1.0, ge=0, le=10, description="query names the definition")
    path_boost: float = Field(0.25, ge=0, le=10, description="query terms in the file's path")
    test_file_weight: float = Field(
        0.7, ge=0, le=1, description="score factor of test files unless the query is about tests"
    )
    max_hits_per_file: int | None = Field(None, ge=1, le=100, description="None: no cap")
    # POST /api/codebase/index only accepts repositories under these folders. Unset: the
    # `serve --repo` folders and the home folder of the user the server runs as; a server
    # that binds beyond loopback must set them.
    allowed_roots: list[str] = Field(default_factory=list, max_length=256)
    # PostgreSQL: index jobs are rows every replica sees. A runner renews its lease every
    # third of `job_lease_s`; a job whose lease ran out (its replica died) is taken over.
    job_lease_s: float = Field(30.0, ge=0.5, le=3600)
    job_poll_s: float = Field(1.0, gt=0, le=60, description="how often replicas look for jobs")

    @model_validator(mode="after")
    def _postgres_needs_url(self) -> IndexSettings:
        if self.store == "postgres" and not self.url:
            raise ValueError("store = 'postgres' needs url = 'postgresql://...'")
        return self


class RepoContextSettings(_Strict):
    """Repository snippets put into completion prompts (repository-aware FIM)."""

    enabled: bool = Field(True, description="add the index's best matches to FIM prompts")
    share: float = Field(0.25, ge=0, le=0.75, description="of models.completion.max_prompt_tokens")
    max_tokens: int | None = Field(None, ge=0, le=65536, description="absolute budget; wins")
    max_per_file: int = Field(2, ge=1, le=20)
    max_snippets: int = Field(6, ge=1, le=50)
    candidates: int = Field(20, ge=1, le=100, description="matches asked of the index")
    mode: Literal["hybrid", "lexical"] = "hybrid"
    min_shared_identifiers: int = Field(
        2, ge=0, le=20, description="names a match must share with the code at the cursor"
    )
    # Completions wait this long for the index at most, then go ahead without context.
    timeout_ms: float = Field(150.0, gt=0, le=10_000)
    region_lines: int = Field(16, ge=1, le=1000, description="cursor region matches are cached by")
    cache_ttl_s: float = Field(60.0, ge=0, le=3600)

    def budget(self, max_prompt_tokens: int) -> int:
        if self.max_tokens is not None:
            return min(self.max_tokens, max_prompt_tokens // 2)
        return int(max_prompt_tokens * self.share)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MIMIVERSE_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerSettings = ServerSettings()
    backends: list[BackendSettings] = Field(default_factory=_default_backends, max_length=64)
    models: ModelsSettings = ModelsSettings()
    breaker: BreakerSettings = BreakerSettings()
    cache: CacheSettings = CacheSettings()
    index: IndexSettings = Field(default_factory=IndexSettings)  # data_dir read at load
    repo_context: RepoContextSettings = RepoContextSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    voice: VoiceSettings = VoiceSettings()

    @field_validator("backends")
    @classmethod
    def _unique_names(cls, backends: list[BackendSettings]) -> list[BackendSettings]:
        seen: set[str] = set()
        for b in backends:
            if b.name in seen:
                raise ValueError(f"backend name {b.name!r} is used twice; names must be unique")
            seen.add(b.name)
        return backends

    @model_validator(mode="after")
    def _routes_name_known_backends(self) -> Settings:
        # A configuration composes with the defaults: a route may name a default backend
        # ("local-ollama", "embedded-llm", "embedded") that [[backends]] does not declare.
        defaults = {b.name: b for b in _default_backends()}
        known = {b.name for b in self.backends}
        routes: list[tuple[str, ModelRoute]] = [(t, self.models.route(t)) for t in TASKS]
        if self.models.vision is not None:
            routes.append(("vision", self.models.vision))
        for task, route in routes:
            for name in route.backends:
                if name not in known and name in defaults:
                    self.backends.append(defaults[name])
                    known.add(name)
                elif name not in known:
                    raise ValueError(
                        f"models.{task}.backends names {name!r}, which is not a configured "
                        f"backend; configured: {sorted(known) or 'none'}; add a [[backends]] "
                        f"entry with name = {name!r}, or name one of those"
                    )
        return self

    @model_validator(mode="after")
    def _transcription_on_speech_servers(self) -> Settings:
        route = self.models.transcription
        kinds = {b.name: b.kind for b in self.backends}
        for name in route.backends if route is not None else []:
            if kinds.get(name) not in SPEECH_KINDS:
                raise ValueError(
                    f"models.transcription.backends names {name!r}, which is "
                    + ("not a configured backend" if name not in kinds else
                       f"of kind {kinds[name]!r}") + "; transcription needs OpenAI-compatible "
                    "speech servers (kind = 'openai') or embedded Whisper (kind = 'whisper')"
                )
        return self

    @model_validator(mode="after")
    def _network_needs_tokens(self) -> Settings:
        if not is_loopback(self.server.host) and not self.auth.any_tokens:
            raise ValueError(
                f"server.host = {self.server.host!r} serves the network, and no API token is "
                "configured: add an [auth] section with tokens = [\"...\"] (or token_sha256) to "
                "the config file, or set MIMIVERSE_AUTH_TOKENS, or bind to 127.0.0.1"
            )
        return self

    @model_validator(mode="after")
    def _network_needs_allowed_roots(self) -> Settings:
        if not is_loopback(self.server.host) and not self.index.allowed_roots:
            raise ValueError(
                f"server.host = {self.server.host!r} serves the network, and [index] "
                "allowed_roots is not set: list the folders clients may index (else any "
                "client could index any folder the server can read), or bind to 127.0.0.1"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings, env_settings, _AuthTokensEnv(settings_cls)
        ]
        path = _config_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class _AuthTokensEnv(PydanticBaseSettingsSource):
    """MIMIVERSE_AUTH_TOKENS (comma-separated) as auth.tokens, below MIMIVERSE_AUTH__*."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        raw = os.environ.get("MIMIVERSE_AUTH_TOKENS")
        return {"auth": {"tokens": raw}} if raw else {}


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from `config` (or $MIMIVERSE_CONFIG), the environment and overrides.

    Raises ConfigError with one line per invalid field, naming it and what is allowed.
    """
    raw = config if config is not None else os.environ.get("MIMIVERSE_CONFIG")
    path = Path(raw) if raw else None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist or is not a file")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    token = _config_file.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source=path)) from None
    finally:
        _config_file.reset(token)


def describe_validation_error(exc: ValidationError, *, source: Path | None = None) -> str:
    where = f" in {source}" if source else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)
