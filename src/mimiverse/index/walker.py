"""Find the files of a repository worth indexing, cheaply, and count why the others were not.

`walk()` costs one `scandir` per directory and one `stat` per candidate file: it never
opens a source file, so re-indexing an unchanged tree stays cheap. `read_source()` is the
one place a file is read: once, with a check that it is still a regular file, and the
content checks that need bytes (binary, private keys, minified, generated) run there.

What is skipped, and the reason it is counted under (names are stable; reports and
metrics use them):

    ignored          .gitignore (every level, negation included), .mimiverseignore,
                     .git/info/exclude, or an always-skipped directory (.git, node_modules,
                     virtualenvs, caches). A skipped directory counts once.
    too_large        over max_file_bytes
    binary           a NUL byte in the content
    minified         *.min.js / *.min.css / source maps, or a very long average line
    generated        lockfiles, or a "Code generated ... DO NOT EDIT" / "@generated" header
    secret           .env*, private keys and credential files, by name or by content
    symlink_outside  a symlink whose target resolves outside the root: never followed
    symlink_loop     a directory symlink to a directory already walked (a loop, or a tree
                     walked under its real path), or a link that cannot be resolved (ELOOP)
    special_file     FIFOs, sockets, devices: never opened
    unreadable       permission denied, a dangling symlink, a file gone since the walk
    swapped          a file replaced by a symlink (or moved) between the walk and the read:
                     opened with O_NOFOLLOW and checked on the descriptor, never read
    bad_name         a name that is not valid UTF-8 (it could not be stored or shown
                     as it is); a directory with such a name counts once
    unsupported      images, archives, fonts, compiled objects and other non-text formats
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mimiverse.errors import CodeIndexError
from mimiverse.index.ignore import Stack, is_ignored, load_rules

DEFAULT_MAX_FILE_BYTES = 1024 * 1024

SKIP_REASONS: tuple[str, ...] = (
    "ignored",
    "too_large",
    "binary",
    "minified",
    "generated",
    "secret",
    "symlink_outside",
    "symlink_loop",
    "special_file",
    "unreadable",
    "swapped",
    "bad_name",
    "unsupported",
)

IGNORE_FILE = ".mimiverseignore"

# Never worth indexing, whatever .gitignore says (it often does not list them).
ALWAYS_SKIPPED_DIRS: frozenset[str] = frozenset(
    {
        ".git", ".hg", ".svn", ".bzr", ".jj", ".mimiverse",
        "node_modules", "bower_components", ".venv", "__pycache__",
        ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".eggs",
        ".gradle", ".next", ".nuxt", ".svelte-kit", ".terraform", ".idea", ".vs",
    }
)

_LOCKFILES: frozenset[str] = frozenset(
    {
        "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
        "bun.lockb", "poetry.lock", "pipfile.lock", "uv.lock", "pdm.lock", "cargo.lock",
        "gemfile.lock", "composer.lock", "go.sum", "flake.lock", "mix.lock",
        "pubspec.lock", "podfile.lock", "packages.lock.json", "gradle.lockfile",
    }
)

_MINIFIED_SUFFIXES: tuple[str, ...] = (
    ".min.js", ".min.mjs", ".min.css", "-min.js", ".js.map", ".css.map", ".min.map",
)

_SECRET_NAMES: frozenset[str] = frozenset(
    {
        ".env", ".netrc", "_netrc", ".npmrc", ".pypirc", ".pgpass", ".git-credentials",
        ".htpasswd", ".dockercfg", "credentials",  # the last one: ~/.aws/credentials
    }
)
_SECRET_EXTENSIONS: frozenset[str] = frozenset(
    {".pem", ".key", ".p12", ".pfx", ".kdbx", ".jks", ".keystore", ".ppk", ".tfstate"}
)
_SSH_KEY_PREFIXES: tuple[str, ...] = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")

_UNSUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {
        # images, fonts, media
        ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".icns", ".webp", ".tif", ".tiff",
        ".psd", ".heic", ".avif", ".svg", ".svgz", ".ttf", ".otf", ".woff", ".woff2", ".eot",
        ".mp3", ".wav", ".ogg", ".flac", ".m4a", ".aac", ".mp4", ".mov", ".avi", ".mkv",
        ".webm",
        # archives and packages
        ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".lz4", ".jar",
        ".war", ".ear", ".whl", ".egg", ".deb", ".rpm", ".dmg", ".iso", ".apk", ".ipa",
        # compiled code
        ".exe", ".dll", ".so", ".dylib", ".o", ".obj", ".a", ".lib", ".class", ".pyc",
        ".pyo", ".pyd", ".wasm", ".node", ".bin",
        # documents, data, models
        ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp",
        ".db", ".sqlite", ".sqlite3", ".mdb", ".parquet", ".feather", ".arrow", ".h5",
        ".hdf5", ".npy", ".npz", ".pkl", ".pickle", ".pt", ".pth", ".onnx", ".safetensors",
        ".gguf", ".ckpt", ".tflite",
    }
)

_LANGUAGE_BY_EXTENSION: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".hxx": "cpp", ".h++": "cpp", ".ipp": "cpp", ".inl": "cpp", ".cu": "cuda",
    ".cs": "csharp", ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby", ".php": "php",
    ".kt": "kotlin", ".kts": "kotlin", ".swift": "swift", ".scala": "scala", ".sc": "scala",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".lua": "lua",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst",
    ".json": "json", ".jsonc": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".sql": "sql", ".html": "html", ".htm": "html", ".css": "css", ".scss": "scss",
    ".less": "less", ".vue": "vue", ".svelte": "svelte", ".dart": "dart",
    ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hrl": "erlang",
    ".hs": "haskell", ".ml": "ocaml", ".mli": "ocaml", ".clj": "clojure", ".cljs": "clojure",
    ".r": "r", ".jl": "julia", ".pl": "perl", ".pm": "perl", ".mm": "objc",
    ".proto": "proto", ".graphql": "graphql", ".gql": "graphql", ".tf": "hcl", ".hcl": "hcl",
    ".nix": "nix", ".zig": "zig", ".xml": "xml", ".ini": "ini", ".cfg": "ini",
    ".tex": "latex", ".vim": "vim", ".elm": "elm", ".groovy": "groovy", ".gradle": "groovy",
    ".cmake": "cmake", ".mk": "make", ".ps1": "powershell", ".bzl": "starlark",
    ".dockerfile": "dockerfile",
}

_LANGUAGE_BY_NAME: dict[str, str] = {
    "makefile": "make", "gnumakefile": "make", "dockerfile": "dockerfile",
    "containerfile": "dockerfile", "cmakelists.txt": "cmake", "gemfile": "ruby",
    "rakefile": "ruby", "vagrantfile": "ruby", "jenkinsfile": "groovy", "build": "starlark",
    "build.bazel": "starlark", "workspace": "starlark", ".bashrc": "shell",
    ".zshrc": "shell", ".profile": "shell",
}

# Only a file's leading comment block is searched, so code that merely mentions these
# markers (like this module) is not mistaken for generated code.
_GENERATED_MARKER = re.compile(
    r"code generated\b.*\bdo not edit|@generated\b|<auto-generated|"
    r"\b(?:auto-?generated|generated (?:by|from|with)|automatically generated)\b"
    r".*\bdo not (?:edit|modify|change)",
    re.IGNORECASE,
)
_COMMENT_LEADERS: tuple[str, ...] = ("//", "#", "/*", "*", "--", ";", "<!--", "%", "(*", "'")
_HEADER_LINES = 40

# Minified or data-like text: average line length over this, on files of at least:
_MINIFIED_AVG_LINE = 200
_MINIFIED_MIN_BYTES = 2048

@dataclass(frozen=True, slots=True)
class SourceFile:
    """A candidate file found by the walk; its content has not been read."""

    path: str  # relative to the root, POSIX separators
    abs_path: Path  # its real path (a symlink inside the root: its target)
    size: int
    mtime_ns: int
    language: str | None


@dataclass(frozen=True, slots=True)
class SourceText:
    """The content of a file that passed every check."""

    text: str
    sha256: str  # of the bytes on disk, so it identifies the file whatever the decoding
    encoding: str  # "utf-8", "utf-16" or "latin-1" (the lossless fallback)


class SkipReason(str):
    """Why a file was not indexed: one of SKIP_REASONS. A str, so it keys a Counter as is."""

    __slots__ = ()


@dataclass(slots=True)
class WalkResult:
    files: list[SourceFile]
    skipped: Counter[str] = field(default_factory=Counter)
    dirs: int = 0  # directories walked (root included)


def detect_language(name: str) -> str | None:
    """The language of a file from its name (extension first, then well-known names)."""
    lower = name.rsplit("/", 1)[-1].lower()
    dot = lower.rfind(".")
    if dot > 0:
        lang = _LANGUAGE_BY_EXTENSION.get(lower[dot:])
        if lang is not None:
            return lang
    by_name = _LANGUAGE_BY_NAME.get(lower)
    if by_name is None and lower.startswith("dockerfile."):
        return "dockerfile"
    return by_name


def skip_reason_for_name(name: str) -> str | None:
    """The reason a file is skipped from its name alone, or None to keep it."""
    lower = name.lower()
    dot = lower.rfind(".")
    ext = lower[dot:] if dot > 0 else ""
    if (
        lower in _SECRET_NAMES
        or lower.startswith((".env.", "secrets."))
        or ext in _SECRET_EXTENSIONS
        or (lower.startswith("credentials") and lower.endswith(".json"))
        or (lower.startswith(_SSH_KEY_PREFIXES) and not lower.endswith(".pub"))
    ):
        return "secret"
    if ext in _UNSUPPORTED_EXTENSIONS or lower == ".ds_store":
        return "unsupported"
    if lower in _LOCKFILES:
        return "generated"
    if lower.endswith(_MINIFIED_SUFFIXES):
        return "minified"
    return None


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


@dataclass(slots=True)
class _Dir:
    abs: str
    real: str
    rel: str  # "" for the root, else "a/b/" (with the trailing slash)
    stack: Stack


def iter_files(
    root: Path | str,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    skipped: Counter[str] | None = None,
    stats: WalkResult | None = None,
) -> Iterator[SourceFile]:
    """Yield the candidate files under `root`, counting each skip by reason in `skipped`.

    Order is deterministic: a directory's files by name, then its subdirectories by
    name; directories reached through symlinks come last, so a tree is found under its
    real path rather than under a link to it.
    """
    counts: Counter[str] = skipped if skipped is not None else Counter()
    root_abs = os.path.abspath(root)
    real_root = os.path.realpath(root_abs)
    if not os.path.isdir(real_root):
        raise CodeIndexError(f"{root} is not a directory")

    mimi = load_rules(os.path.join(root_abs, IGNORE_FILE), "")
    top = [
        rules
        for rules in (
            mimi,
            load_rules(os.path.join(root_abs, ".gitignore"), ""),
            load_rules(os.path.join(root_abs, ".git", "info", "exclude"), ""),
        )
        if rules is not None
    ]
    # Nested .gitignore files slot in after .mimiverseignore, which always decides first.
    pinned = 1 if mimi is not None else 0

    visited: set[str] = {real_root}
    pending: list[_Dir] = [_Dir(root_abs, real_root, "", tuple(top))]
    deferred: list[_Dir] = []  # directory symlinks, walked after the real tree
    while pending or deferred:
        if pending:
            current = pending.pop()
        else:
            current = deferred.pop(0)
            if current.real in visited:
                counts["symlink_loop"] += 1
                continue
            visited.add(current.real)
        try:
            with os.scandir(current.abs) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            counts["unreadable"] += 1
            continue
        names = {e.name for e in entries}
        if current.rel and "pyvenv.cfg" in names:  # a virtualenv, whatever its name
            counts["ignored"] += 1
            continue
        if stats is not None:
            stats.dirs += 1
        stack = current.stack
        if current.rel and ".gitignore" in names:
            rules = load_rules(os.path.join(current.abs, ".gitignore"), current.rel)
            if rules is not None:
                stack = (*stack[:pinned], rules, *stack[pinned:])

        subdirs: list[_Dir] = []
        for entry in entries:
            name = entry.name
            rel = current.rel + name
            if not _valid_name(name):
                counts["bad_name"] += 1
                continue
            try:
                if entry.is_symlink():
                    found = _follow_link(entry, rel, real_root, stack, counts, max_file_bytes)
                    if isinstance(found, _Dir):
                        deferred.append(found)
                    elif found is not None:
                        yield found
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if name in ALWAYS_SKIPPED_DIRS or is_ignored(stack, rel, True):
                        counts["ignored"] += 1
                    else:
                        subdirs.append(
                            _Dir(entry.path, current.real + os.sep + name, rel + "/", stack)
                        )
                    continue
                if not entry.is_file(follow_symlinks=False):
                    counts["special_file"] += 1
                    continue
                if is_ignored(stack, rel, False):
                    counts["ignored"] += 1
                    continue
                reason = skip_reason_for_name(name)
                if reason is not None:
                    counts[reason] += 1
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                counts["unreadable"] += 1
                continue
            found_file = _checked(current.real + os.sep + name, rel, st, counts, max_file_bytes)
            if found_file is not None:
                yield found_file
        for sub in subdirs:
            visited.add(sub.real)
        pending.extend(reversed(subdirs))


def _valid_name(name: str) -> bool:
    """Whether a name decoded from the file system is real UTF-8 (undecodable bytes come
    back as lone surrogates, which no store, JSON or terminal takes)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _checked(
    abs_path: str, rel: str, st: os.stat_result, counts: Counter[str], max_file_bytes: int
) -> SourceFile | None:
    if not stat.S_ISREG(st.st_mode):
        counts["special_file"] += 1
        return None
    if st.st_size > max_file_bytes:
        counts["too_large"] += 1
        return None
    return SourceFile(rel, Path(abs_path), st.st_size, st.st_mtime_ns, detect_language(rel))


def _follow_link(
    entry: os.DirEntry[str],
    rel: str,
    real_root: str,
    stack: Stack,
    counts: Counter[str],
    max_file_bytes: int,
) -> SourceFile | _Dir | None:
    """A symlink inside the root is followed like what it points to; others are skipped."""
    name = entry.name
    # Git sees a symlink as a file: match it as one first.
    if name in ALWAYS_SKIPPED_DIRS or is_ignored(stack, rel, False):
        counts["ignored"] += 1
        return None
    real = os.path.realpath(entry.path)
    if not _inside(real, real_root):
        counts["symlink_outside"] += 1
        return None
    try:
        st = os.stat(entry.path)  # follows the link; never opens the target
    except OSError as exc:
        counts["symlink_loop" if exc.errno == errno.ELOOP else "unreadable"] += 1
        return None
    if stat.S_ISDIR(st.st_mode):
        if is_ignored(stack, rel, True):
            counts["ignored"] += 1
            return None
        return _Dir(entry.path, real, rel + "/", stack)
    reason = skip_reason_for_name(name)
    if reason is not None:
        counts[reason] += 1
        return None
    return _checked(real, rel, st, counts, max_file_bytes)


def walk(root: Path | str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> WalkResult:
    """Every candidate file under `root` (see `iter_files`) and the skip counts."""
    result = WalkResult(files=[])
    result.files = list(
        iter_files(root, max_file_bytes=max_file_bytes, skipped=result.skipped, stats=result)
    )
    return result


def read_source(
    file: SourceFile, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> SourceText | SkipReason:
    """Read a walked file once and run the content checks; never blocks on a FIFO.

    `file.abs_path` is the real path the walk found (symlinks inside the root resolved).
    It is opened without following a link, and the open descriptor is checked: a regular
    file, still at that real path. A file swapped for a symlink, or a directory above it
    swapped for one, after the walk is never read through the link.
    """
    flags = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(file.abs_path, flags)
    except OSError as exc:
        return SkipReason("swapped" if exc.errno == errno.ELOOP else "unreadable")
    try:
        st = os.fstat(fd)
        # Checked on the open descriptor: the path may have been swapped since the walk.
        if not stat.S_ISREG(st.st_mode):
            return SkipReason("special_file")
        if not _opened_at(fd, str(file.abs_path)):
            return SkipReason("swapped")
        if st.st_size > max_file_bytes:
            return SkipReason("too_large")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        remaining = max_file_bytes + 1
        while remaining > 0:
            block = os.read(fd, min(remaining, 1 << 20))
            if not block:
                break
            chunks.append(block)
            remaining -= len(block)
    except OSError:
        return SkipReason("unreadable")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_file_bytes:
        return SkipReason("too_large")  # it grew since the walk
    return classify_source(data)


def _opened_at(fd: int, real_path: str) -> bool:
    """Whether the descriptor is the file at `real_path`: O_NOFOLLOW guards only the last
    component, the kernel's name of the open file (Linux /proc) guards every one."""
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc (macOS): the last component was guarded by O_NOFOLLOW
        return True
    return opened == real_path


def classify_source(data: bytes) -> SourceText | SkipReason:
    """Decode `data` and decide whether it is indexable text (binary, key, minified, ...)."""
    encoding = "utf-8"
    text: str | None = None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # UTF-16 text is full of NUL bytes: decode it before the binary check sees them.
        text = data.decode("utf-16", errors="replace")
        encoding = "utf-16"
    elif b"\x00" in data:
        return SkipReason("binary")
    head = data[:200].lstrip()
    if head.startswith(b"-----BEGIN") and b"PRIVATE KEY" in head.split(b"\n", 1)[0]:
        return SkipReason("secret")
    if head.startswith(b"PuTTY-User-Key-File"):
        return SkipReason("secret")
    if text is None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            # latin-1 maps every byte to a character: never fails, loses nothing, and is
            # right for the commonest legacy encoding; ASCII code reads the same either way.
            text = data.decode("latin-1")
            encoding = "latin-1"
    if _is_generated(text):
        return SkipReason("generated")
    if len(text) >= _MINIFIED_MIN_BYTES and len(text) / (text.count("\n") + 1) > _MINIFIED_AVG_LINE:
        return SkipReason("minified")
    return SourceText(text, hashlib.sha256(data).hexdigest(), encoding)


def _is_generated(text: str) -> bool:
    for number, line in enumerate(text[:8192].split("\n")):
        if number >= _HEADER_LINES:
            break
        stripped = line.strip()
        if not stripped or (number == 0 and stripped.startswith("#!")):
            continue
        if not stripped.startswith(_COMMENT_LEADERS):
            break  # the header comment block is over
        if _GENERATED_MARKER.search(stripped):
            return True
    return False
