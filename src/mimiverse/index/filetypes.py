"""What a file is from its name alone: its language, or why it is never indexed (a
secret, a lockfile, minified, a non-text format). The walker asks before any stat."""

from __future__ import annotations

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
