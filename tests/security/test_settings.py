"""Token settings: env var, validation, secrecy; no network bind without tokens."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mimiverse.cli.main import app
from mimiverse.config import load_settings
from mimiverse.errors import ConfigError
from tests.security.conftest import OTHER_TOKEN, TOKEN


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def test_env_var_takes_comma_separated_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMIVERSE_AUTH_TOKENS", f" {TOKEN}, {OTHER_TOKEN} ,")
    settings = load_settings()
    assert settings.auth.digests == (digest(TOKEN), digest(OTHER_TOKEN))


def test_tokens_never_show_in_repr_or_dumps() -> None:
    settings = load_settings(auth={"tokens": [TOKEN]})
    assert TOKEN not in repr(settings)
    assert TOKEN not in settings.model_dump_json()


@pytest.mark.parametrize(("auth", "complaint"), [
    ({"tokens": ["short"]}, "at least 16 characters"),
    ({"token_sha256": ["abc"]}, "64 hex digits"),
    ({"token_sha256": ["g" * 64]}, "64 hex digits"),
])
def test_bad_token_settings_are_named(auth: dict[str, list[str]], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        load_settings(auth=auth)
    assert "auth." in str(caught.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "mimiverse.example.com"])
def test_network_bind_without_tokens_is_refused(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(server={"host": host})
    message = str(caught.value)
    assert "add an [auth] section with tokens = " in message
    assert "MIMIVERSE_AUTH_TOKENS" in message
    assert repr(host) in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_bind_needs_no_token(host: str) -> None:
    assert load_settings(server={"host": host}).server.host == host


def test_network_bind_with_a_token_or_digest_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    hexed = hashlib.sha256(TOKEN.encode()).hexdigest()
    index = {"allowed_roots": ["/srv/repos"]}
    assert load_settings(server={"host": "0.0.0.0"}, auth={"token_sha256": [hexed]}, index=index)
    monkeypatch.setenv("MIMIVERSE_AUTH_TOKENS", TOKEN)
    assert load_settings(server={"host": "0.0.0.0"}, index=index).auth.digests == (digest(TOKEN),)


def test_network_bind_without_allowed_roots_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMIVERSE_AUTH_TOKENS", TOKEN)
    with pytest.raises(ConfigError, match=r"\[index\] allowed_roots is not set"):
        load_settings(server={"host": "0.0.0.0"})
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1 and "allowed_roots" in " ".join(result.output.split())


def test_cors_origins_must_be_exact_origins() -> None:
    with pytest.raises(ConfigError, match="http"):
        load_settings(server={"cors_origins": ["*"]})


def test_serve_refuses_a_network_bind_without_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIMIVERSE_AUTH_TOKENS", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "server.host = '0.0.0.0'" in output and "MIMIVERSE_AUTH_TOKENS" in output
    assert "add an [auth] section" in output


def test_env_tokens_and_file_digests_are_both_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "mimiverse.toml"
    config.write_text(f'[auth]\ntoken_sha256 = ["{hashlib.sha256(TOKEN.encode()).hexdigest()}"]\n',
                      encoding="utf-8")
    monkeypatch.setenv("MIMIVERSE_AUTH_TOKENS", OTHER_TOKEN)
    assert load_settings(config).auth.digests == (digest(OTHER_TOKEN), digest(TOKEN))
