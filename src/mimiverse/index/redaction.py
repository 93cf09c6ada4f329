"""Secrets inside indexed text (keys pasted into code, configs, fixtures) are replaced by
`<redacted:KIND>` in the whole file before it is chunked, so neither search results nor
completion prompts carry them, and no chunk boundary can cut a secret in two. Files that
are secrets as a whole (.env, key files) are skipped by the walker instead.

The detectors are Yelp's detect-secrets plugins (each knows one provider's shape, or a
secret-sounding name assigned a value), called on lines directly: never its scanner,
which may verify a secret over the network. Shapes it lacks are plugins of ours
(index/secret_plugins.py). Multi-line blocks (PEM, PGP, OpenSSH, PuTTY private keys) go
whole, from the BEGIN line to the END line (or the end of the file), and keep their line
count so every later line keeps its number.

Speed: a plugin only looks at lines that hold one of its literal hints; most files hold
none, so they cost one lowercase copy and a few substring tests, and a run over such files
never imports detect-secrets (~0.25 s).
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

_DS = "detect_secrets.plugins."
_OURS = "mimiverse.index.secret_plugins."

# (kind, plugin class, lowercase literals one of which every line it can match holds)
_LINE_PLUGINS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("aws-access-key", _DS + "aws.AWSKeyDetector",
     ("akia", "asia", "abia", "acca", "a3t", "aws")),
    ("aws-secret-key", _OURS + "AwsSecretKeyUnquoted", ("aws",)),
    ("azure-storage-key", _DS + "azure_storage_key.AzureStorageKeyDetector", ("accountkey=",)),
    ("url-credentials", _DS + "basic_auth.BasicAuthDetector", ("://",)),
    ("github-token", _DS + "github_token.GitHubTokenDetector",
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    ("github-token", _OURS + "GitHubFineGrainedToken", ("github_pat_",)),
    ("gitlab-token", _DS + "gitlab_token.GitLabTokenDetector",
     ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "gr1348941")),
    ("jwt", _DS + "jwt.JwtTokenDetector", ("eyj",)),
    ("mailchimp-key", _DS + "mailchimp.MailchimpDetector", ("-us",)),
    ("npm-token", _DS + "npm.NpmDetector", ("_authtoken",)),
    ("npm-token", _OURS + "NpmAccessToken", ("npm_",)),
    ("api-key", _DS + "openai.OpenAIDetector", ("t3blbkfj",)),
    ("api-key", _OURS + "ApiKey", ("sk-",)),
    ("pypi-token", _DS + "pypi_token.PypiTokenDetector", ("pypi-ag",)),
    ("sendgrid-key", _DS + "sendgrid.SendGridDetector", ("sg.",)),
    ("slack-token", _DS + "slack.SlackDetector", ("xox", "hooks.slack.com")),
    ("square-oauth-secret", _DS + "square_oauth.SquareOAuthDetector", ("sq0csp-",)),
    ("stripe-key", _DS + "stripe.StripeDetector", ("k_live_",)),
    ("huggingface-token", _OURS + "HuggingFaceToken", ("hf_",)),
    ("google-api-key", _OURS + "GoogleApiKey", ("aiza",)),
)
# detect-secrets' KeywordDetector: a secret-sounding name assigned a value.
_KEYWORD_HINTS = (
    "api_key", "apikey", "auth_key", "authkey", "service_key", "account_key", "db_key",
    "database_key", "priv_key", "private_key", "privatekey", "client_key", "db_pass",
    "database_pass", "key_pass", "password", "passwd", "pwd", "secret", "contrase",
)
_BLOCK_HINTS = ("private key", "putty-user-key-file")
_ALL_HINTS = tuple(
    {h for _, _, hints in _LINE_PLUGINS for h in hints} | {*_KEYWORD_HINTS, *_BLOCK_HINTS}
)
# Keyword assignments in these are config-like: values need no quotes.
_CONFIG_LANGUAGES = frozenset(
    {None, "yaml", "ini", "toml", "shell", "dockerfile", "make", "markdown", "rst", "hcl"}
)
_BLOCK_END = re.compile(r"-----END[^\n]*?-----|^Private-MAC:[^\n]*", re.MULTILINE)
# What follows a JWT's header and payload: its signature goes with them.
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-+/=]*")


@dataclass(frozen=True, slots=True)
class Redacted:
    text: str
    found: Counter[str]  # secrets replaced, by kind


@dataclass(frozen=True, slots=True)
class _Detector:
    kind: str
    plugin: Any  # a detect_secrets BasePlugin
    hints: tuple[str, ...]


def _plugin(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)()


@cache
def _detectors() -> tuple[tuple[_Detector, ...], tuple[Any, ...]]:
    """The line detectors and the private-key block markers (keyword assignments use the
    keyword plugin's regexes directly, see `_keyword_regexes`)."""
    lines = tuple(_Detector(kind, _plugin(dotted), hints) for kind, dotted, hints in _LINE_PLUGINS)
    blocks = (_plugin(_DS + "private_key.PrivateKeyDetector"),
              _plugin(_OURS + "EncryptedPrivateKey"))
    return lines, blocks


def redact(text: str, path: str = "", language: str | None = None) -> Redacted:
    """`text` (a whole file at `path`) with every secret found replaced."""
    found: Counter[str] = Counter()
    data = text.encode("utf-8", "surrogatepass")
    hits = list(_hints().finditer(data))  # one linear pass: most files end here
    if not hits:
        return Redacted(text, found)
    detectors, blocks = _detectors()
    if b"PRIVATE KEY" in data or b"PuTTY-User-Key-File" in data:
        stripped = _remove_key_blocks(text, blocks, found)
        if stripped is not text:  # the hints inside the blocks are gone with them
            text, data = stripped, stripped.encode("utf-8", "surrogatepass")
            hits = list(_hints().finditer(data))
    starts = sorted({data.rfind(b"\n", 0, m.start()) + 1 for m in hits})
    keywords: dict[re.Pattern[str], int] | None = None
    out: list[str] = []
    position = 0  # in data
    for start in starts:
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line = data[start:end].decode("utf-8", "surrogatepass")
        low = line.lower()
        spans: list[tuple[int, int, str]] = []
        for detector in detectors:
            if any(hint in low for hint in detector.hints):
                spans += _found(detector, line)
        if any(hint in low for hint in _KEYWORD_HINTS):
            keywords = keywords or _keyword_regexes(path, language)
            for regex, group in keywords.items():
                if (match := regex.search(line)) is not None and match.start(group) >= 0:
                    spans.append((match.start(group), match.end(group), "secret-assignment"))
        if spans:
            out += [data[position:start].decode("utf-8", "surrogatepass"),
                    _splice(line, spans, found)]
            position = end
    if not out:
        return Redacted(text, found)
    out.append(data[position:].decode("utf-8", "surrogatepass"))
    return Redacted("".join(out), found)


@cache
def _hints() -> Any:
    """Every hint of every detector as one case-insensitive RE2 pattern (a DFA: one pass
    over the file, ~25 times faster than testing each hint with `in`)."""
    import re2

    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True
    literals = sorted(_ALL_HINTS, key=len, reverse=True)
    return re2.compile("|".join(re.escape(h) for h in literals).encode(), options)


def _found(detector: _Detector, line: str) -> Iterator[tuple[int, int, str]]:
    """The spans of `line` that `detector` finds secret, with their kind."""
    plugin = detector.plugin
    if detector.kind == "jwt":
        # Its own analyze_string checks that a token decodes; the signature goes too.
        # Every occurrence of each token: the same one twice on a line goes twice.
        for value in set(plugin.analyze_string(line)):
            at = line.find(value)
            while at >= 0:
                yield at, _JWT_TAIL.match(line, at + len(value)).end(), "jwt"  # type: ignore[union-attr]
                at = line.find(value, at + len(value))
        return
    for number, regex in enumerate(plugin.denylist):
        for match in regex.finditer(line):
            # A group after the match's start is the value of an assignment (`aws_secret =
            # "..."`, `://user:PASSWORD@`); a group at its start is a prefix (`(ghp|gho)_`).
            group = 1 if regex.groups and match.start(1) > match.start() else 0
            kind = detector.kind
            if kind == "aws-access-key" and number > 0:
                kind = "aws-secret-key"  # the plugin's second shape: a key found by its name
            yield match.start(group), match.end(group), kind


def _splice(text: str, spans: list[tuple[int, int, str]], found: Counter[str]) -> str:
    """`text` with each span replaced by its marker; overlapping spans merge."""
    out: list[str] = []
    position = 0
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start < position:  # inside (or overlapping) a span replaced already
            if end > position:
                position = end
            continue
        found[kind] += 1
        out += [text[position:start], f"<redacted:{kind}>"]
        position = end
    out.append(text[position:])
    return "".join(out)


def _keyword_regexes(path: str, language: str | None) -> dict[re.Pattern[str], int]:
    from detect_secrets.plugins import keyword
    from detect_secrets.util.filetype import FileType, determine_file_type

    file_type = determine_file_type(path)
    if file_type is FileType.OTHER and language in _CONFIG_LANGUAGES:
        file_type = FileType.CONFIG  # .env-like, shell, Dockerfiles: bare `password=...`
    regexes: dict[re.Pattern[str], int] = keyword.REGEX_BY_FILETYPE.get(
        file_type, keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
    )
    return regexes


def _remove_key_blocks(text: str, blocks: tuple[Any, ...], found: Counter[str]) -> str:
    """Private key blocks replaced whole (BEGIN line to END line, or to the end of the
    text when it has none), keeping their line breaks."""
    out: list[str] = []
    position = 0
    while (start := _next_block(text, position, blocks)) is not None:
        end_match = _BLOCK_END.search(text, start)
        end = end_match.end() if end_match is not None else len(text)
        lines = text.count("\n", start, end)
        out += [text[position:start], "<redacted:private-key>" + "\n" * lines]
        found["private-key"] += 1
        position = end
    if not out:
        return text
    out.append(text[position:])
    return "".join(out)


def _next_block(text: str, position: int, blocks: tuple[Any, ...]) -> int | None:
    """Where the next private key block starts: its `-----BEGIN` (else its line)."""
    line_start = position
    while line_start < len(text):
        line_end = text.find("\n", line_start)
        line_end = len(text) if line_end < 0 else line_end
        line = text[line_start:line_end]
        if "KEY" in line.upper():
            markers = [m for plugin in blocks for m in plugin.analyze_string(line)]
            if markers:
                at = min(line.find(m) for m in markers)
                dashes = line.rfind("-----", 0, at)
                return line_start + (dashes if dashes >= 0 else 0)
        line_start = line_end + 1
    return None
