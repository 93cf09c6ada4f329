"""Settings of the server itself: HTTP, API tokens and teams, limits, voice, cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from mimiverse.config.base import StrictModel
from mimiverse.security import Principal, token_digest


class ServerSettings(StrictModel):
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


class _Tokens(StrictModel):
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


class LimitsSettings(StrictModel):
    """What one client (an API token; all callers together when no tokens are set) may
    take. Over a limit: 429 with Retry-After. Health and metrics are never limited."""

    requests_per_minute: int = Field(0, ge=0, le=1_000_000, description="0: no rate limit")
    burst: int | None = Field(None, ge=1, le=100_000, description="default: a tenth of a minute")
    max_concurrent: int = Field(64, ge=1, le=10_000, description="requests in flight")
    max_queue: int = Field(256, ge=0, le=100_000, description="waiting for a slot; more: 429")
    queue_timeout_s: float = Field(10.0, gt=0, le=600, description="longest wait in the queue")

class VoiceSettings(StrictModel):
    """Limits on audio sent for transcription (over them: 413 for size, 422 for length)."""

    max_audio_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Checked where the container says how long it is (WAV, MP3, Ogg, FLAC, MP4/M4A).
    max_audio_seconds: float = Field(120.0, gt=0, le=3600)


class CacheSettings(StrictModel):
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
