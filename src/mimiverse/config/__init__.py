"""Settings: one object, built from an optional TOML file, then MIMIVERSE_* env vars.

The sections live by concept in backends (backends, routes, breaker), serving (server,
auth, limits, voice, cache), indexing (index, ranking, repository context) and loading
(Settings, load_settings); every name stays importable from `mimiverse.config`.
"""

from mimiverse.config.backends import (
    SPEECH_KINDS,
    TASKS,
    BackendKind,
    BackendSettings,
    Balance,
    BreakerSettings,
    Capability,
    Family,
    ModelRoute,
    ModelsSettings,
    Task,
    Timeouts,
    TritonOptions,
    default_backends,
)
from mimiverse.config.indexing import IndexSettings, RepoContextSettings, default_data_dir
from mimiverse.config.loading import Settings, describe_validation_error, load_settings
from mimiverse.config.serving import (
    AuthSettings,
    CacheSettings,
    LimitsSettings,
    ServerSettings,
    TeamSettings,
    VoiceSettings,
)

__all__ = [
    "SPEECH_KINDS",
    "TASKS",
    "AuthSettings",
    "BackendKind",
    "BackendSettings",
    "Balance",
    "BreakerSettings",
    "CacheSettings",
    "Capability",
    "Family",
    "IndexSettings",
    "LimitsSettings",
    "ModelRoute",
    "ModelsSettings",
    "RepoContextSettings",
    "ServerSettings",
    "Settings",
    "Task",
    "TeamSettings",
    "Timeouts",
    "TritonOptions",
    "VoiceSettings",
    "default_backends",
    "default_data_dir",
    "describe_validation_error",
    "load_settings",
]
