"""docs/deploy.md says what the files do: paths, commands and models it names are real."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from mimiverse.cli.main import app
from mimiverse.config import load_settings
from tests.deploy.deploy_files import MIMIVERSE_TOML, ROOT, env_example, services
from tests.deploy.test_scaling import SCALE_FILE

DOCS = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
NOT_IN_GIT = {"deploy/.env", "deploy/repos/"}  # made by the team, ignored by git


def test_every_deploy_path_named_exists() -> None:
    named = set(re.findall(r"`(deploy/[^`\s]*)`", DOCS))
    assert len(named) > 10
    for path in named - NOT_IN_GIT:
        assert (ROOT / path).exists(), path


def test_scale_command_is_the_one_the_overlay_documents() -> None:
    command = ("docker compose -f docker-compose.yml -f docker-compose.scale.yml up -d "
               "--scale mimiverse=3")
    assert command in DOCS
    assert command in SCALE_FILE.read_text(encoding="utf-8")


def test_profile_table_matches_the_compose_profiles() -> None:
    rows = re.findall(r"^\| `([a-z,]+)`(?: \(default\))? \| [^|]+ \| "
                      r"`MIMIVERSE_EMBEDDING_BACKENDS='(.+)'` \|$", DOCS, re.MULTILINE)
    assert rows == [("cpu", '["embedded"]'), ("gpu", '["embedded"]'),
                    ("gpu,triton", '["triton", "embedded"]')]
    assert env_example()["COMPOSE_PROFILES"] == "cpu"
    assert env_example()["MIMIVERSE_EMBEDDING_BACKENDS"] == '["embedded"]'
    by_profile: dict[str, set[str]] = {}
    for name, service in services().items():
        for profile in service.get("profiles", []):
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == {"cpu": {"ollama"}, "gpu": {"ollama-gpu", "dcgm-exporter"},
                          "triton": {"triton"}}


def test_models_pulled_are_the_models_configured() -> None:
    settings = load_settings(MIMIVERSE_TOML)
    on_ollama = {settings.models.route(t).model for t in ("completion", "chat")
                 if settings.models.route(t).backends == ["ollama"]}
    pulled = set(re.findall(r"exec ollama ollama pull (\S+)", DOCS))
    assert pulled == on_ollama == {"qwen2.5-coder:1.5b", "qwen2.5-coder:7b"}


def test_triton_prepare_command_exists_with_the_documented_options() -> None:
    assert ("mimiverse triton prepare --out deploy/triton/models --config deploy/mimiverse.toml"
            in DOCS)
    result = CliRunner().invoke(app, ["triton", "prepare", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--out", "--config", "--device", "--max-batch"):
        assert option in result.output
