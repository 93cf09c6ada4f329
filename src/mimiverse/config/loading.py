"""Loading: the Settings object built from defaults, an optional TOML file and MIMIVERSE_* env.

Precedence (highest first): keyword arguments, environment (`MIMIVERSE_SERVER__PORT=...`,
nested with `__`), the TOML file named by `--config` / `MIMIVERSE_CONFIG`, defaults.
Nothing is read at import time: `load_settings()` is called by the CLI and by tests.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mimiverse.config.backends import (
    SPEECH_KINDS,
    TASKS,
    BackendSettings,
    BreakerSettings,
    ModelRoute,
    ModelsSettings,
    default_backends,
)
from mimiverse.config.indexing import IndexSettings, RepoContextSettings
from mimiverse.config.serving import (
    AuthSettings,
    CacheSettings,
    LimitsSettings,
    ServerSettings,
    VoiceSettings,
)
from mimiverse.errors import ConfigError
from mimiverse.security import is_loopback

_config_file: ContextVar[Path | None] = ContextVar("mimiverse_config_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MIMIVERSE_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerSettings = ServerSettings()
    backends: list[BackendSettings] = Field(default_factory=default_backends, max_length=64)
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
        defaults = {b.name: b for b in default_backends()}
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
