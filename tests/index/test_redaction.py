"""Secrets inside indexed text are replaced before storing; ordinary code is untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mimiverse.config import IndexSettings
from mimiverse.index.indexer import Indexer
from mimiverse.index.redaction import redact
from mimiverse.index.store.sqlite import SqliteStore
from mimiverse.index.tokenize import tokens

# Shaped like real credentials, made up here (none is valid anywhere).
AWS = "AKIA" + "Q3EXAMPLE7MIMIVRS"[:16]
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
OPENAI = "sk-proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed"
JWT = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtaW1pdmVyc2UifQ."
       "c2lnbmF0dXJlLW5vdC1yZWFsLXRlc3Q")


@pytest.mark.parametrize("line,expected", [
    (f'AWS_KEY = "{AWS}"', 'AWS_KEY = "<redacted:aws-access-key>"'),
    (f"token: {GITHUB}", "token: <redacted:github-token>"),
    (f"client = OpenAI(api_key='{OPENAI}')", "client = OpenAI(api_key='<redacted:api-key>')"),
    (f"Authorization: Bearer {JWT}", "Authorization: Bearer <redacted:jwt>"),
    ("SLACK = 'xoxb-1234567890-abcdefghij'", "SLACK = '<redacted:slack-token>'"),
    ("STRIPE = 'sk_live_abcdefghijklmnop1234'", "STRIPE = '<redacted:stripe-key>'"),
    ("GL = 'glpat-abcdefghij0123456789'", "GL = '<redacted:gitlab-token>'"),
    ("G = 'AIza" + "B" * 35 + "'", "G = '<redacted:google-api-key>'"),
])
def test_known_secret_shapes_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == (expected, 1)


def test_a_private_key_block_goes_whole() -> None:
    text = ('KEY = """\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKCAQEA\n'
            '-----END RSA PRIVATE KEY-----\n"""\nprint(KEY)\n')
    assert redact(text) == ('KEY = """\n<redacted:private-key>\n"""\nprint(KEY)\n', 1)


@pytest.mark.parametrize("code", [
    "def task_runner(desk_top): return 'sk-learn'",  # "sk-" without a key's length
    "AKIA_PREFIX = 'AKIA'  # documentation of the format",
    "ghost = gh_pages + 'ghp_short'",
    "header = base64('eyJ')",
    "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
])
def test_ordinary_code_is_untouched(code: str) -> None:
    assert redact(code) == (code, 0)


def test_indexed_text_never_holds_the_secret(tmp_path: Path) -> None:
    """In-process and through worker processes alike (60 files start a worker)."""
    stored = []
    for workers in (0, 1):
        root = tmp_path / f"repo{workers}"
        for i in range(60):
            (root / f"m{i:02d}.py").parent.mkdir(parents=True, exist_ok=True)
            secret = f'\nAWS_KEY = "{AWS}"\n' if i % 7 == 0 else ""
            (root / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    return x + {i}\n{secret}")
        store = SqliteStore(root / ".mimiverse" / "index.db", tokenizer=tokens)
        Indexer(store, root, IndexSettings(), workers=workers).run()
        store.close()
        with sqlite3.connect(root / ".mimiverse" / "index.db") as con:
            texts = [t for (t,) in con.execute("SELECT text FROM chunks ORDER BY path")]
            terms = " ".join(t for (t,) in con.execute("SELECT terms FROM chunks"))
        assert not any(AWS in t for t in texts) and AWS.lower() not in terms.lower()
        assert sum("<redacted:aws-access-key>" in t for t in texts) == 9
        stored.append(texts)
    assert stored[0] == stored[1]
