"""Host allow-list (DNS rebinding) and CORS (which browser pages may call us)."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import TOKEN, Serve

APP_ORIGIN = "https://editor.example.com"


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.1:5000", "localhost", "LOCALHOST:8080", "[::1]", "[::1]:5000",
])
def test_loopback_names_are_served_with_any_port(serve: Serve, host: str) -> None:
    server = serve()
    assert httpx.get(f"{server.url}/api/version", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "127.0.0.1.evil.example",
                                  "0.0.0.0", "[::2]"])
def test_other_hosts_get_421(serve: Serve, host: str) -> None:
    server = serve()
    answer = httpx.get(f"{server.url}/health/live", headers={"Host": host})
    assert answer.status_code == 421
    assert answer.json()["error"]["type"] == "misdirected_request"
    assert "allowed_hosts" in answer.json()["error"]["message"]


def test_allowed_hosts_add_names_and_star_allows_any(serve: Serve) -> None:
    listed = serve(server={"allowed_hosts": ["mimiverse.team.example"]})
    for host, status in [("mimiverse.team.example:443", 200), ("MIMIVERSE.team.example", 200),
                         ("localhost", 200), ("other.team.example", 421)]:
        answer = httpx.get(f"{listed.url}/api/version", headers={"Host": host})
        assert answer.status_code == status, host
    anything = serve(server={"allowed_hosts": ["*"]})
    assert httpx.get(f"{anything.url}/api/version",
                     headers={"Host": "evil.example"}).status_code == 200


def test_host_is_checked_before_the_token(serve: Serve) -> None:
    server = serve(auth={"tokens": [TOKEN]})
    answer = httpx.get(f"{server.url}/api/version",
                       headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 421


def test_no_cors_headers_by_default_and_foreign_origins_refused(serve: Serve) -> None:
    server = serve()
    plain = httpx.get(f"{server.url}/api/version")
    assert plain.status_code == 200
    assert not any(k.startswith("access-control-") for k in plain.headers)
    foreign = httpx.post(f"{server.url}/v1/completions", headers={"Origin": "https://evil.example"},
                         json={"model": "completion", "prompt": "x"})
    assert foreign.status_code == 403
    assert foreign.json()["error"]["type"] == "forbidden_origin"
    assert "access-control-allow-origin" not in foreign.headers


def test_same_origin_pages_need_no_cors(serve: Serve) -> None:
    server = serve()  # e.g. the /docs page trying a request
    answer = httpx.get(f"{server.url}/api/version", headers={"Origin": server.url})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_listed_origin_gets_its_own_origin_back(serve: Serve) -> None:
    server = serve(server={"cors_origins": [APP_ORIGIN]}, auth={"tokens": [TOKEN]})
    answer = httpx.get(f"{server.url}/api/version",
                       headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    assert answer.headers["vary"] == "Origin"
    # A 401 carries the header too, so the page can read why it was refused.
    refused = httpx.get(f"{server.url}/api/version", headers={"Origin": APP_ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP_ORIGIN
    other = httpx.get(f"{server.url}/api/version",
                      headers={"Origin": "https://evil.example",
                               "Authorization": f"Bearer {TOKEN}"})
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


def test_preflights(serve: Serve) -> None:
    server = serve(server={"cors_origins": [APP_ORIGIN]}, auth={"tokens": [TOKEN]})
    ask = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = httpx.options(f"{server.url}/v1/chat/completions",
                            headers={"Origin": APP_ORIGIN, **ask})
    assert allowed.status_code == 204  # no token: browsers send none with a preflight
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allowed_headers = allowed.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "access-control-allow-credentials" not in allowed.headers
    denied = httpx.options(f"{server.url}/v1/chat/completions",
                           headers={"Origin": "https://evil.example", **ask})
    assert denied.status_code == 403
    assert "access-control-allow-origin" not in denied.headers
