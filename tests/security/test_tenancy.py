"""Teams: a team's tokens get only the team's own cached answers."""

from __future__ import annotations

import httpx
import pytest

from mimiverse.config import load_settings
from mimiverse.errors import ConfigError
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
    settings = load_settings(server={"host": "0.0.0.0"},
                             auth={"teams": [{"name": "a", "tokens": [TOKEN]}]})
    assert settings.auth.any_tokens
