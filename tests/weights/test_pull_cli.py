"""`mimiverse pull`: the catalog, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mimiverse.cli.main import app
from mimiverse.weights.catalog import CATALOG, DEFAULT_MODEL, default_models

runner = CliRunner()


def test_list_shows_every_model_and_which_are_pinned() -> None:
    result = runner.invoke(app, ["pull", "--list"], terminal_width=160)
    assert result.exit_code == 0, result.output
    for name in CATALOG:
        assert name in result.stdout
    assert "1d9614638d18…" in result.stdout  # the 0.5B file's pinned digest
    assert result.stdout.count("not pinned") == sum(1 for m in CATALOG.values()
                                                    if m.sha256 is None)


def test_an_unknown_model_is_refused_naming_the_known_ones() -> None:
    result = runner.invoke(app, ["pull", "gpt-5"])
    assert result.exit_code == 1
    assert "'gpt-5' is not in the catalog; known: qwen2.5-coder-0.5b-instruct" in result.stderr


def test_an_unpinned_model_needs_a_digest() -> None:
    result = runner.invoke(app, ["pull", "qwen2.5-coder-7b-instruct"])
    assert result.exit_code == 1
    assert "no SHA-256 is pinned for qwen2.5-coder-7b-instruct" in " ".join(result.stderr.split())


def test_offline_pull_of_a_missing_model_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIMIVERSE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["pull"])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert f"put {CATALOG[DEFAULT_MODEL].filename} in {tmp_path}" in message


@pytest.mark.parametrize(("ram_gb", "expected"), [
    (1.0, [DEFAULT_MODEL]), (64.0, [DEFAULT_MODEL]),  # only the 0.5B file is pinned today
])
def test_defaults_are_pinned_models_that_fit(ram_gb: float, expected: list[str]) -> None:
    assert [m.name for m in default_models(ram_gb)] == expected


def test_a_malformed_digest_is_refused_before_anything_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIMIVERSE_MODELS_DIR", str(tmp_path))
    here = tmp_path / CATALOG[DEFAULT_MODEL].filename
    here.write_bytes(b"kept")
    result = runner.invoke(app, ["pull", DEFAULT_MODEL, "--sha256", "1d9614638d18"])
    assert result.exit_code == 1
    assert "--sha256 is 64 hex digits (as sha256sum prints), not '1d9614638d18'" in " ".join(
        result.stderr.split())
    assert here.read_bytes() == b"kept"
