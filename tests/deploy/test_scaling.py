"""deploy/docker-compose.scale.yml and the Caddyfile: N gateway replicas behind one port."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from tests.deploy.deploy_files import (
    DEPLOY,
    env_example,
    exposed_ports,
    interpolate,
    services,
    strings_in,
    variables_in,
)

SCALE_FILE = DEPLOY / "docker-compose.scale.yml"
CADDYFILE = DEPLOY / "caddy" / "Caddyfile"


@dataclass(frozen=True)
class Reset:
    """Compose's `!reset` tag: drop what the base file set."""

    value: Any


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor(
    "!reset", lambda loader, node: Reset(loader.construct_sequence(node)
                                         if isinstance(node, yaml.SequenceNode) else None)
)


def overlay() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(SCALE_FILE.read_text(encoding="utf-8"), ComposeLoader)
    return data


def test_replicas_publish_no_host_port_and_the_balancer_takes_the_gateways() -> None:
    over = overlay()["services"]
    assert over["mimiverse"] == {"ports": Reset([])}
    lb = over["lb"]
    # The same address and port as the single gateway, loopback by default.
    assert lb["ports"] == services()["mimiverse"]["ports"]
    assert [interpolate(p, {}) for p in lb["ports"]] == ["127.0.0.1:5000:5000"]
    assert lb["depends_on"] == {"mimiverse": {"condition": "service_healthy"}}
    assert lb["healthcheck"]["test"][0] == "CMD" and "/health/live" in lb["healthcheck"]["test"][-1]
    assert set(overlay()["volumes"]) == {"caddy-data"}
    assert "caddy-data:/data" in lb["volumes"]
    assert "./caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in lb["volumes"]
    # No replica may pin a name: --scale needs compose to name them.
    assert "container_name" not in services()["mimiverse"]


def test_overlay_variables_are_in_the_env_example() -> None:
    used = {name for _, value in strings_in(overlay()) for name, _ in variables_in(value)}
    assert used <= set(env_example())


def test_caddy_balances_over_every_replica_of_the_gateway_service() -> None:
    text = CADDYFILE.read_text(encoding="utf-8")
    block = re.search(r"dynamic a \{(.*?)\}", text, re.DOTALL)
    assert block, "replicas must be found by DNS A records, re-read while running"
    settings = dict(line.split(None, 1) for line in block.group(1).strip().splitlines())
    assert settings["name"] == "mimiverse"
    assert int(settings["port"]) in exposed_ports(services()["mimiverse"])
    listen = re.search(r"^:(\d+) \{", text, re.MULTILINE)
    assert listen and int(listen.group(1)) in exposed_ports(overlay()["services"]["lb"])
    assert re.search(r"^\s*flush_interval -1$", text, re.MULTILINE), "SSE must not be buffered"
    assert re.search(r"^\s*lb_policy least_conn$", text, re.MULTILINE)
    assert text.count("{") == text.count("}")
