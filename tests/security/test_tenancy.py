"""Teams: a team's tokens get only the team's own cached answers and repositories."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mimiverse.config import load_settings
from mimiverse.errors import ConfigError
from tests.index.test_service import make_repo
from tests.security.conftest import OTHER_TOKEN, TOKEN, Serve
from tests.servers.harness import ServerHandle

ADMIN_TOKEN = "admin-token-0123456789abcdef"
TEAM_A2_TOKEN = "team-a-second-token-0123456"


def teams(tmp_repos: tuple[str, str] = ("/srv/a", "/srv/b")) -> dict[str, object]:
    return {
        "tokens": [ADMIN_TOKEN],
        "teams": [
            {"name": "alpha", "tokens": [TOKEN, TEAM_A2_TOKEN], "repos": [tmp_repos[0]]},
            {"name": "beta", "tokens": [OTHER_TOKEN], "repos": [tmp_repos[1]]},
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_cached_answers_stay_within_a_team(serve: Serve, openai_server: ServerHandle) -> None:
    server = serve(auth=teams())
    body = {"prefix": "def shared(x):\n    return ", "suffix": "\n"}  # greedy: cacheable
    with httpx.Client(base_url=server.url, timeout=30) as client:
        def cached(token: str) -> bool:
            r = client.post("/api/ai/fim", json=body, headers=bearer(token))
            assert r.status_code == 200
            return bool(r.json()["cached"])

        assert cached(TOKEN) is False  # alpha asks first
        assert cached(TEAM_A2_TOKEN) is True  # the same team, another token: shared
        assert cached(OTHER_TOKEN) is False  # beta never sees alpha's answer
        assert cached(OTHER_TOKEN) is True
        assert cached(ADMIN_TOKEN) is False  # tokens outside teams have their own scope
    assert openai_server.behaviour.requests["/v1/completions"] == 3


def test_team_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        load_settings(auth={"tokens": [TOKEN], "teams": [{"name": "a", "tokens": [TOKEN]}]})
    with pytest.raises(ConfigError, match="absolute path"):
        load_settings(auth={"teams": [{"name": "a", "tokens": [TOKEN], "repos": ["rel/dir"]}]})
    with pytest.raises(ConfigError, match="unique"):
        load_settings(auth={"teams": [{"name": "a", "tokens": [TOKEN]},
                                      {"name": "a", "tokens": [OTHER_TOKEN]}]})
    # Team tokens alone are tokens: serving the network with them is allowed.
    settings = load_settings(server={"host": "0.0.0.0"}, index={"allowed_roots": ["/srv"]},
                             auth={"teams": [{"name": "a", "tokens": [TOKEN]}]})
    assert settings.auth.any_tokens


def indexed(client: httpx.Client, token: str, path: Path) -> dict[str, Any]:
    r = client.post("/api/codebase/index", json={"path": str(path)}, headers=bearer(token))
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 10  # a guard against hanging, not a timed assertion
    while True:
        status: dict[str, Any] = client.get("/api/codebase/status", params={"repo": str(path)},
                                            headers=bearer(token)).json()
        if status["state"] != "indexing" or time.monotonic() > deadline:
            return status


def test_a_team_indexes_and_searches_only_its_own_repositories(
    serve: Serve, tmp_path: Path
) -> None:
    alpha_repo = make_repo(tmp_path / "alpha").resolve()
    beta_repo = make_repo(tmp_path / "beta").resolve()
    server = serve(auth=teams((str(alpha_repo), str(beta_repo))),
                   index={"allowed_roots": [str(tmp_path)]})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # Nothing of beta's is indexed yet: beta sees no repository at all.
        assert indexed(client, TOKEN, alpha_repo)["state"] == "ready"
        r = client.post("/api/codebase/search", json={"query": "password"},
                        headers=bearer(OTHER_TOKEN))
        assert (r.status_code, r.json()["error"]["type"]) == (409, "not_ready")
        # Beta cannot index alpha's repository, nor name it in a search or status.
        r = client.post("/api/codebase/index", json={"path": str(alpha_repo)},
                        headers=bearer(OTHER_TOKEN))
        assert (r.status_code, r.json()["error"]["type"]) == (403, "path_not_allowed")
        assert "repositories of team 'beta'" in r.json()["error"]["message"]
        named = {"query": "password", "repo": str(alpha_repo)}
        for method, path, kwargs in (
            ("POST", "/api/codebase/search", {"json": named}),
            ("GET", "/api/codebase/status", {"params": {"repo": str(alpha_repo)}}),
        ):
            r = client.request(method, path, headers=bearer(OTHER_TOKEN), **kwargs)
            assert (r.status_code, r.json()["error"]["type"]) == (404, "repo_not_indexed")
            assert str(alpha_repo) not in r.json()["error"]["message"].split("indexed:")[1]
        # Once beta has its own, its searches go there by default, never to alpha's.
        assert indexed(client, OTHER_TOKEN, beta_repo)["state"] == "ready"
        for token, root in ((TOKEN, alpha_repo), (OTHER_TOKEN, beta_repo)):
            status = client.get("/api/codebase/status", headers=bearer(token)).json()
            assert status["root"] == str(root)
        # Tokens outside teams see every repository.
        r = client.post("/api/codebase/search", headers=bearer(ADMIN_TOKEN),
                        json={"query": "password", "repo": str(beta_repo)})
        assert r.status_code == 200 and r.json()["results"]


def test_only_tokens_outside_teams_clear_the_shared_cache(serve: Serve) -> None:
    server = serve(auth=teams())
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.delete("/api/cache", headers=bearer(TOKEN))
        assert r.status_code == 403
        assert r.json()["error"] == {
            "type": "forbidden",
            "message": "team 'alpha' may not clear the shared cache; a token outside "
                       "[[auth.teams]] may",
        }
        assert client.delete("/api/cache", headers=bearer(ADMIN_TOKEN)).status_code == 200
