"""Secrets inside indexed text are replaced before chunking; ordinary code is untouched.

Keys are made here by the real tools (openssl, ssh-keygen, gpg), placed where a chunk
boundary cuts them, and the stored chunks are read back from SQLite.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from mimiverse.config import IndexSettings
from mimiverse.index.chunker import chunk_file
from mimiverse.index.filetypes import detect_language
from mimiverse.index.indexer import Indexer
from mimiverse.index.redaction import redact
from mimiverse.index.store.sqlite import SqliteStore
from mimiverse.index.tokenize import tokens

# Shaped like real credentials, made up here (none is valid anywhere).
AWS = "AKIA" + "Q3EXAMPLE7MIMIVRS"[:16]
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "MIMIVERSE0"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
OPENAI = "sk-proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed"
HF = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNm12345678"
NPM = "npm_" + "a1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtaW1pdmVyc2UifQ."
       "c2lnbmF0dXJlLW5vdC1yZWFsLXRlc3Q")


@pytest.mark.parametrize("path,line,expected,kind", [
    ("a.py", f'AWS_KEY = "{AWS}"', 'AWS_KEY = "<redacted:aws-access-key>"', "aws-access-key"),
    ("a.py", f'aws_secret_access_key = "{AWS_SECRET}"',
     'aws_secret_access_key = "<redacted:aws-secret-key>"', "aws-secret-key"),
    ("run.sh", f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}",
     "export AWS_SECRET_ACCESS_KEY=<redacted:aws-secret-key>", "aws-secret-key"),
    ("a.yml", f"token: {GITHUB}", "token: <redacted:github-token>", "github-token"),
    ("a.py", f"client = OpenAI(api_key='{OPENAI}')",
     "client = OpenAI(api_key='<redacted:api-key>')", "api-key"),
    ("a.txt", f"Authorization: Bearer {JWT}", "Authorization: Bearer <redacted:jwt>", "jwt"),
    ("a.py", "SLACK = 'xoxb-1234567890-abcdefghij'", "SLACK = '<redacted:slack-token>'",
     "slack-token"),
    ("a.py", "STRIPE = 'sk_live_abcdefghijklmnop12345678'", "STRIPE = '<redacted:stripe-key>'",
     "stripe-key"),
    ("a.py", "GL = 'glpat-abcdefghij0123456789'", "GL = '<redacted:gitlab-token>'",
     "gitlab-token"),
    ("a.py", "G = 'AIza" + "B" * 35 + "'", "G = '<redacted:google-api-key>'", "google-api-key"),
    ("a.py", f"HF_TOKEN = '{HF}'", "HF_TOKEN = '<redacted:huggingface-token>'",
     "huggingface-token"),
    ("a.js", f"const t = '{NPM}';", "const t = '<redacted:npm-token>';", "npm-token"),
    ("config.yaml", "  password: hunter2-Horse", "  password: <redacted:secret-assignment>",
     "secret-assignment"),
    ("setup.cfg", "password = hunter2-Horse", "password = <redacted:secret-assignment>",
     "secret-assignment"),
    ("prod.env.sample", "DB_PASSWORD=hunter2-Horse", "DB_PASSWORD=<redacted:secret-assignment>",
     "secret-assignment"),
    ("db.py", "URL = 'postgres://app:pw-Hunter2@db.internal:5432/app'",
     "URL = 'postgres://app:<redacted:url-credentials>@db.internal:5432/app'", "url-credentials"),
])
def test_known_secret_shapes_are_redacted(path: str, line: str, expected: str, kind: str) -> None:
    found = redact(line, path, None if path.endswith(".env.sample") else detect_language(path))
    assert (found.text, dict(found.found)) == (expected, {kind: 1})


def test_the_same_token_twice_on_a_line_goes_twice() -> None:
    found = redact(f'a = "{JWT}"; b = "{JWT}"', "a.py", "python")
    assert (found.text, dict(found.found)) == (
        'a = "<redacted:jwt>"; b = "<redacted:jwt>"', {"jwt": 2})


def test_a_private_key_block_goes_whole_and_keeps_its_lines() -> None:
    text = ('KEY = """\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKCAQEA\n'
            '-----END RSA PRIVATE KEY-----\n"""\nprint(KEY)\n')
    found = redact(text, "k.py", "python")
    assert found.text == 'KEY = """\n<redacted:private-key>\n\n\n\n"""\nprint(KEY)\n'
    assert found.found == {"private-key": 1}


def test_a_key_without_its_end_goes_to_the_end_of_the_file() -> None:
    found = redact("x = 1\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAA\n", "k.md")
    assert found.text == "x = 1\n<redacted:private-key>\n\n\n"


@pytest.mark.parametrize("path,code", [
    ("a.py", "def task_runner(desk_top): return 'sk-learn'"),  # "sk-" without a key's length
    ("a.py", "AKIA_PREFIX = 'AKIA'  # documentation of the format"),
    ("a.py", "ghost = gh_pages + 'ghp_short'"),
    ("a.py", "header = base64('eyJ')"),
    ("a.py", "password = read_password()\nself.password = password"),
    ("a.md", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"),
    ("a.md", "See https://example.com/docs and mailto:me@example.com"),
])
def test_ordinary_code_is_untouched(path: str, code: str) -> None:
    found = redact(code, path, detect_language(path))
    assert (found.text, found.found) == (code, {})


def _run(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, cwd=cwd).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Private keys made by the real tools, in the formats they write."""
    for tool in ("openssl", "ssh-keygen", "gpg"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed (apt-get install openssl openssh-client gnupg)")
    d = tmp_path_factory.mktemp("keys")
    made = {
        "rsa": _run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"),
        "ec": _run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"),
    }
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id"))
    made["ssh"] = (d / "id").read_text()
    home = d / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ("gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback",
           "--passphrase", "")
    _run(*gpg, "--quick-gen-key", "Mimiverse Test <test@example.invalid>", "ed25519",
         "default", "never")
    made["pgp"] = _run(*gpg, "--armor", "--export-secret-keys")
    return made


def _body_lines(key: str) -> list[str]:
    """The lines that must never be stored: everything but blank ones."""
    return [line for line in key.splitlines() if line.strip() and "-----" not in line] + [
        line for line in key.splitlines() if line.startswith("-----END")
    ]


def _repo(root: Path, keys: dict[str, str], files: int) -> None:
    """Keys in a Python string and a Markdown fence, each straddling an 80-line chunk
    boundary, among enough ordinary files that workers start."""
    root.mkdir(parents=True)
    padding = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(22))
    for name, key in keys.items():
        filler = "certificate notes\n" * 76
        (root / f"{name}_fixture.py").write_text(
            f'{padding}KEY = """\n{filler}{key}"""\nUSE = KEY\n')
        (root / f"{name}.md").write_text(
            "# Notes\n" + "text line\n" * 76 + f"```\n{key}```\nmore\n")
    (root / "deploy.yaml").write_text("db:\n  user: app\n  password: hunter2-Horse\n")
    (root / "settings.py").write_text(f'HF = "{HF}"\nDSN = "postgres://a:pw-Secret1@h/db"\n')
    for i in range(files):
        (root / f"m{i:02d}.py").write_text(f"def g{i}(x):\n    return x * {i}\n")


@pytest.mark.parametrize("workers", [0, 1])
def test_indexed_text_never_holds_a_key_across_chunks(
    tmp_path: Path, keys: dict[str, str], workers: int
) -> None:
    root = tmp_path / "repo"
    _repo(root, keys, files=60)
    db = tmp_path / "index.db"
    store = SqliteStore(db, tokenizer=tokens)
    report = Indexer(store, root, IndexSettings(), workers=workers).run()
    store.close()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT path, start_line, end_line, text FROM chunks").fetchall()
    stored = "\n".join(text for *_, text in rows)
    for name, key in keys.items():
        for line in _body_lines(key):
            assert line not in stored, (name, line)
        # The fixture is what it claims: chunking the raw text cuts the key in two.
        for path in (f"{name}_fixture.py", f"{name}.md"):
            raw = (root / path).read_text()
            assert any("-----BEGIN" in c.text and "-----END" not in c.text
                       for c in chunk_file(path, raw, detect_language(path))), path
    for secret in ("hunter2-Horse", HF, "pw-Secret1"):
        assert secret not in stored
    assert report.redacted == {"private-key": 8, "secret-assignment": 1,
                               "huggingface-token": 1, "url-credentials": 1}
    # Lines keep their numbers: the line after each key is where the file has it.
    for name in keys:
        path = f"{name}_fixture.py"
        number = (root / path).read_text().split("\n").index("USE = KEY") + 1
        [(start, text)] = [(s, t) for p, s, _, t in rows if p == path and "USE = KEY" in t]
        assert text.split("\n")[number - start] == "USE = KEY"


def test_a_pgp_key_file_is_skipped_whole(tmp_path: Path, keys: dict[str, str]) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "signing.asc").write_text(keys["pgp"])
    (root / "a.py").write_text("x = 1\n")
    store = SqliteStore(tmp_path / "index.db", tokenizer=tokens)
    report = Indexer(store, root, IndexSettings(), workers=0).run()
    store.close()
    assert report.skipped["secret"] == 1 and report.files == 1
