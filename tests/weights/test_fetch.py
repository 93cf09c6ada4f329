"""Fetching catalog models through huggingface_hub from a loopback Hugging Face server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from mimiverse.errors import ModelFileError
from mimiverse.weights import fetch
from mimiverse.weights.catalog import CatalogModel
from tests.servers.harness import free_port
from tests.servers.hf_server import HubServer
from tests.support.tiny_gguf import write_tiny_gguf

REPO = "acme/Tiny-Coder-GGUF"
NAME = "tiny-coder-q4_0.gguf"


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("gguf") / NAME
    write_tiny_gguf(path)
    return path.read_bytes()


@pytest.fixture
def hub(gguf_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    server = HubServer()
    server.hub.files[(REPO, NAME)] = gguf_bytes
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("MIMIVERSE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once, at its import
    yield server
    server.stop()


def entry(data: bytes, sha256: str | None = None) -> CatalogModel:
    return CatalogModel("tiny-coder", REPO, NAME, sha256 or hashlib.sha256(data).hexdigest(),
                        len(data), ("completion",), 0.1)


def content_files(root: Path) -> list[Path]:
    """Files that hold model bytes (huggingface_hub's lock files are empty)."""
    return [p for p in root.rglob("*") if p.is_file() and p.stat().st_size > 0]


def test_first_fetch_then_the_local_copy(hub: HubServer, gguf_bytes: bytes) -> None:
    model = entry(gguf_bytes)
    assert fetch.find_local(model) is None
    path = fetch.fetch(model, progress=False)
    assert path.read_bytes() == gguf_bytes
    assert [m for m, _, _ in hub.hub.requests] == ["HEAD", "GET"]
    # Later: the cached copy, found without asking the server.
    assert fetch.find_local(model) == path
    assert fetch.fetch(model, progress=False) == path
    assert len(hub.hub.requests) == 2


def test_a_cut_connection_resumes_where_it_stopped(
    hub: HubServer, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # huggingface_hub writes whole chunks (10 MB); the tiny file needs smaller ones.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 65_536)
    hub.hub.cut_after = 100_000  # one whole chunk arrives, the second is cut
    path = fetch.fetch(entry(gguf_bytes), progress=False)
    assert path.read_bytes() == gguf_bytes
    gets = [r for m, _, r in hub.hub.requests if m == "GET"]
    assert gets == [None, "bytes=65536-"]


def test_a_wrong_sha256_is_refused_and_nothing_is_left(
    hub: HubServer, gguf_bytes: bytes, tmp_path: Path
) -> None:
    wrong = "0" * 64
    with pytest.raises(ModelFileError, match=f"expected {wrong}: refused and deleted"):
        fetch.fetch(entry(gguf_bytes, sha256=wrong), progress=False)
    assert content_files(tmp_path / "hub") == []
    assert not (tmp_path / "models").exists() or content_files(tmp_path / "models") == []
    assert fetch.find_local(entry(gguf_bytes)) is None


def test_offline_fetches_nothing_and_says_what_to_do(
    hub: HubServer, gguf_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFileError) as caught:
        fetch.fetch(entry(gguf_bytes), progress=False)
    message = str(caught.value)
    assert "`mimiverse pull tiny-coder`" in message
    assert f"put {NAME} in {tmp_path / 'models'}" in message and "HF_HUB_OFFLINE" in message
    assert hub.hub.requests == []
    # A file put there by hand is used, offline too.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / NAME).write_bytes(gguf_bytes)
    assert fetch.fetch(entry(gguf_bytes), progress=False) == tmp_path / "models" / NAME
    assert hub.hub.requests == []


def test_an_unpinned_model_is_refused_before_any_download(
    hub: HubServer, gguf_bytes: bytes
) -> None:
    unpinned = CatalogModel("tiny-coder", REPO, NAME, None, None, ("completion",), 0.1)
    with pytest.raises(ModelFileError, match="no SHA-256 is pinned for tiny-coder"):
        fetch.fetch(unpinned, progress=False)
    assert hub.hub.requests == []
    # ... and accepted with a digest the user gives.
    digest = hashlib.sha256(gguf_bytes).hexdigest()
    assert fetch.fetch(unpinned, sha256=digest, progress=False).read_bytes() == gguf_bytes


def test_a_missing_file_on_the_hub_says_so(hub: HubServer, gguf_bytes: bytes) -> None:
    hub.hub.files.clear()
    with pytest.raises(ModelFileError, match="cannot fetch tiny-coder: Hugging Face: "):
        fetch.fetch(entry(gguf_bytes), progress=False)


def test_an_unreachable_hub_is_reported_at_once(
    hub: HubServer, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    with pytest.raises(ModelFileError, match=f"Hugging Face: {closed} is unreachable"):
        fetch.fetch(entry(gguf_bytes), progress=False)


def test_a_recheck_replaces_a_bad_copy_in_the_models_folder(
    hub: HubServer, gguf_bytes: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = entry(gguf_bytes)
    bad = tmp_path / "models" / NAME
    bad.parent.mkdir()
    bad.write_bytes(gguf_bytes[:-1] + b"\x00")  # the right size, one byte wrong
    wrong = hashlib.sha256(bad.read_bytes()).hexdigest()
    # Found as it is without a recheck (a server start does not read 500 MB again) ...
    assert fetch.fetch(model, progress=False) == bad
    assert hub.hub.requests == []
    # ... refused with one: deleted, said so, and fetched again.
    with caplog.at_level("WARNING", logger="mimiverse.weights"):
        path = fetch.fetch(model, progress=False, recheck=True)
    assert path.read_bytes() == gguf_bytes and path.is_relative_to(tmp_path / "hub")
    assert not bad.exists()
    assert f"{bad} has SHA-256 {wrong}, expected {model.sha256}: deleted" in caplog.text
    assert [m for m, _, _ in hub.hub.requests] == ["HEAD", "GET"]


def test_a_recheck_downloads_a_corrupted_cache_blob_again(
    hub: HubServer, gguf_bytes: bytes
) -> None:
    model = entry(gguf_bytes)
    path = fetch.fetch(model, progress=False)
    path.resolve().write_bytes(b"GGUF" + bytes(100))  # the cached blob, damaged on disk
    assert fetch.fetch(model, progress=False, recheck=True).read_bytes() == gguf_bytes
    assert [m for m, _, _ in hub.hub.requests] == ["HEAD", "GET", "HEAD", "GET"]
    # A good copy is read, not fetched again.
    assert fetch.fetch(model, progress=False, recheck=True).read_bytes() == gguf_bytes
    assert len(hub.hub.requests) == 4


def test_a_recheck_that_cannot_fetch_says_which_file_was_refused(
    hub: HubServer, gguf_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bad = tmp_path / "models" / NAME
    bad.parent.mkdir()
    bad.write_bytes(b"not the model")
    wrong = hashlib.sha256(b"not the model").hexdigest()
    with pytest.raises(ModelFileError) as caught:
        fetch.fetch(entry(gguf_bytes), progress=False, recheck=True)
    assert str(caught.value).startswith(f"{bad} has SHA-256 {wrong}, expected ")
    assert "(deleted); model tiny-coder is not downloaded" in str(caught.value)
    assert "HF_HUB_OFFLINE is set" in str(caught.value)
    assert not bad.exists() and hub.hub.requests == []


def test_a_recheck_against_a_given_digest(hub: HubServer, gguf_bytes: bytes,
                                          tmp_path: Path) -> None:
    unpinned = CatalogModel("tiny-coder", REPO, NAME, None, None, ("completion",), 0.1)
    other = tmp_path / "models" / NAME
    other.parent.mkdir()
    other.write_bytes(b"another model of the same name")
    # Without a digest there is nothing to check against: the file is taken as it is.
    assert fetch.fetch(unpinned, progress=False, recheck=True) == other
    digest = hashlib.sha256(gguf_bytes).hexdigest()
    path = fetch.fetch(unpinned, sha256=digest, progress=False, recheck=True)
    assert path.read_bytes() == gguf_bytes and not other.exists()


def test_pull_replaces_a_file_that_is_not_the_pinned_one(
    hub: HubServer, gguf_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mimiverse.cli.main import app
    from mimiverse.weights import catalog

    monkeypatch.setitem(catalog.CATALOG, "tiny-coder", entry(gguf_bytes))
    bad = tmp_path / "models" / NAME
    bad.parent.mkdir()
    bad.write_bytes(b"a cut copy")
    result = CliRunner().invoke(app, ["pull", "tiny-coder"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert f"{bad} has SHA-256 {hashlib.sha256(b'a cut copy').hexdigest()}" in said
    assert "deleted; fetching tiny-coder again" in said
    assert not bad.exists()
    assert [m for m, _, _ in hub.hub.requests] == ["HEAD", "GET"]
    # Offline, a bad copy is refused with a clear error and exit code 1.
    bad.write_bytes(b"a cut copy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    result = CliRunner().invoke(app, ["pull", "tiny-coder"])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert "error:" in said and f"{bad} has SHA-256 " in said and "(deleted)" in said
    assert "HF_HUB_OFFLINE is set" in said and not bad.exists()
