"""Tokens: every route but /health/live needs one, in any of the headers clients send."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.routing import iter_route_contexts

from mimiverse.app import create_app
from mimiverse.config import load_settings
from tests.security.conftest import OTHER_TOKEN, TOKEN, Serve

PARAM = re.compile(r"\{[^}]+\}")


def every_route() -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters filled in."""
    app = create_app(load_settings(auth={"tokens": [TOKEN]}))
    routes = {
        (method, PARAM.sub("x", context.path))
        for context in iter_route_contexts(app.routes)
        if context.path is not None
        for method in context.methods or ()
    }
    # The walk must see at least what the OpenAPI schema lists, or it is walking nothing.
    documented = {(m.upper(), PARAM.sub("x", p))
                  for p, ops in app.openapi()["paths"].items() for m in ops}
    assert documented <= routes and len(routes) > 30
    return sorted(routes)


# api/compat/tabby.py's /v1/health (GET and POST) shares one operation id: not ours to judge.
def test_every_route_but_liveness_needs_a_token(serve: Serve) -> None:
    server = serve(auth={"tokens": [TOKEN]})
    unprotected = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for method, path in every_route():
            without = client.request(method, path)
            with_token = client.request(method, path,
                                        headers={"Authorization": f"Bearer {TOKEN}"})
            if path == "/health/live":
                assert (without.status_code, with_token.status_code) == (200, 200)
                continue
            if without.status_code != 401:
                unprotected.append((method, path, without.status_code))
                continue
            # The page asks the browser for the token; API clients are told to bring one.
            assert without.headers["www-authenticate"] == (
                'Basic realm="Mimiverse", charset="UTF-8"' if path == "/" else "Bearer")
            if method != "HEAD":
                assert without.json()["error"]["type"] == "unauthorized"
            assert with_token.status_code != 401, (method, path)
    assert unprotected == []


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "api-key", "authorization"])
def test_token_header_styles(serve: Serve, header: str) -> None:
    server = serve(auth={"tokens": [TOKEN, OTHER_TOKEN]})
    value = f"Bearer {OTHER_TOKEN}" if header.lower() == "authorization" else OTHER_TOKEN
    answer = httpx.get(f"{server.url}/api/version", headers={header: value})
    assert answer.status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token-0123456789"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"},
    {"X-Api-Key": TOKEN[:-1]},
])
def test_missing_or_wrong_tokens_get_401_without_echoing(serve: Serve,
                                                         headers: dict[str, str]) -> None:
    server = serve(auth={"tokens": [TOKEN]})
    answer = httpx.post(f"{server.url}/v1/completions", headers=headers,
                        json={"model": "completion", "prompt": "x"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"]["type"] == "unauthorized"
    assert TOKEN[:12] not in answer.text and "wrong-token" not in answer.text


def test_official_openai_client_sends_the_token(serve: Serve) -> None:
    server = serve(auth={"tokens": [TOKEN]})
    good = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in good.models.list()][:3] == ["completion", "chat", "embedding"]
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_hashed_tokens_from_the_config_file(serve: Serve, tmp_path: Path) -> None:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest().upper()
    config = tmp_path / "mimiverse.toml"
    config.write_text(f'[auth]\ntoken_sha256 = ["{digest}"]\n', encoding="utf-8")
    settings = load_settings(config)
    assert settings.auth.digests == (hashlib.sha256(TOKEN.encode()).digest(),)
    server = serve(auth=settings.auth.model_dump())
    assert httpx.get(f"{server.url}/api/version", headers={"X-Api-Key": TOKEN}).status_code == 200
    assert httpx.get(f"{server.url}/api/version",
                     headers={"X-Api-Key": digest}).status_code == 401


def test_no_tokens_configured_means_no_authentication(serve: Serve) -> None:
    server = serve()
    assert httpx.get(f"{server.url}/api/version").status_code == 200
