"""Reading deploy/ the way Docker Compose, Prometheus and Grafana read it (no engine here).

Compose interpolation, .env files and PromQL are parsed for real (PromQL by the Rust
parser behind `promql_parser`), so a test that passes here means the files say what the
tests claim, not merely that they are valid YAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
MIMIVERSE_TOML = DEPLOY / "mimiverse.toml"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
DATASOURCES_FILE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_PROVIDER_FILE = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "mimiverse.json"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR;
# `$$` is a literal `$` that reaches the container (its own shell expands it there).
_INTERPOLATION = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariable(LookupError):
    """A ${VAR:?message} whose variable is unset or empty: compose refuses to start."""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them: comments skipped, '...' taken literally."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{number}: not KEY=VALUE: {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)


def variables_in(text: str) -> Iterator[tuple[str, str | None]]:
    """(name, operator) of every interpolation in `text`; `$$` escapes are skipped."""
    for match in _INTERPOLATION.finditer(text):
        if match.group(0) == "$$":
            continue
        yield (match.group("braced") or match.group("bare"), match.group("op"))


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """What compose makes of `text` with `env` (.env plus the shell)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = not value
        if op == ":-":
            return arg if unset_or_empty else str(value)
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (unset_or_empty if op == ":?" else value is None):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":+":
            return "" if unset_or_empty else arg
        if op == "+":
            return "" if value is None else arg
        return value or ""

    return _INTERPOLATION.sub(replace, text)


def strings_in(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, value) of every string (and mapping key's value) under `node`."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings_in(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings_in(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def exposed_ports(service: Mapping[str, Any]) -> set[int]:
    """Container ports the service listens on: `expose` plus the container side of `ports`."""
    ports = {int(p) for p in service.get("expose", [])}
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def network_names(name: str, service: Mapping[str, Any]) -> set[str]:
    """The DNS names a service answers to on the compose network."""
    names = {name}
    for network in (service.get("networks") or {}).values():
        names.update((network or {}).get("aliases", []))
    return names


# -- PromQL ----------------------------------------------------------------------------

# Grafana's interval variables are not PromQL; give them a value Prometheus would.
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def promql(expr: str) -> promql_parser.Expr:
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (raises ValueError if it does not parse)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if not node.name:
                raise ValueError(f"selector without a metric name in {expr!r}")
            names.add(node.name)

    promql_parser.walk(promql(expr), visit)
    return names


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in load_yaml(ALERTS_FILE)["groups"]:
        rules.extend(group["rules"])
    return rules


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return panels


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def deploy_metric_names() -> set[str]:
    """Every metric named by the alert rules and the dashboard."""
    names: set[str] = set()
    for expr in [r["expr"] for r in alert_rules()] + dashboard_exprs():
        names |= metric_names(expr)
    return names


# -- Prometheus exposition -------------------------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SERIES_BY_TYPE = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def exposed_series(text: str) -> set[str]:
    """Series names a /metrics page offers: its samples, plus what each `# TYPE` declares
    (a labelled metric with no observation yet has a TYPE line but no sample)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in _SERIES_BY_TYPE.get(kind, ("",)))
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            if match:
                names.add(match.group(1))
    return names


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample `name{labels...}` (labels given must match, others may
    be present), or None when there is none."""
    found: list[float] = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        have = dict(_LABEL.findall(match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append(float(match.group(3)))
    if len(found) > 1:
        raise AssertionError(f"{name}{labels} matches {len(found)} samples; be more specific")
    return found[0] if found else None
