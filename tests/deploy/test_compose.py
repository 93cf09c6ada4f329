"""deploy/docker-compose.yml and deploy/.env.example, read as Docker Compose reads them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mimiverse.config import load_settings
from tests.deploy.deploy_files import (
    DEPLOY,
    ENV_EXAMPLE,
    MIMIVERSE_TOML,
    MissingVariable,
    compose,
    env_example,
    environment_of,
    exposed_ports,
    interpolate,
    network_names,
    services,
    strings_in,
    variables_in,
)

SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
           "MIMIVERSE_AUTH_TOKENS", "MIMIVERSE_METRICS_TOKEN")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PASSWD", re.IGNORECASE)
_VARIABLE = r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}|\$\$[A-Za-z_]\w*"
# One variable, or a comma-separated list of them (the gateway's token list).
ONLY_A_VARIABLE = re.compile(rf"(?:{_VARIABLE})(?:,(?:{_VARIABLE}))*")
GPU_PROFILES = {"gpu", "triton"}
# What a team fills in: .env.example with the three passwords set.
FILLED_ENV = {**env_example(), **{name: f"test-{name.lower()}" for name in SECRETS}}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    assert isinstance(deps, dict), "depends_on must be the long form, with a condition"
    return deps


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    return devices


def test_every_service_has_a_real_healthcheck() -> None:
    for name, service in services().items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}.healthcheck has no {key}"


def test_every_dependency_exists_and_is_awaited_healthy() -> None:
    all_services = services()
    for name, service in all_services.items():
        for target, spec in depends_on(service).items():
            assert target in all_services, f"{name} depends on unknown service {target}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {target}"
            # Only a dependency that a profile may switch off is optional.
            optional = spec.get("required", True) is False
            assert optional == bool(all_services[target].get("profiles")), f"{name} -> {target}"


def test_gateway_waits_for_its_stores_and_every_inference_service() -> None:
    deps = depends_on(services()["mimiverse"])
    assert set(deps) == {"redis", "postgres", "ollama", "ollama-gpu", "triton"}


def test_named_volumes_are_declared_and_bind_mounts_exist() -> None:
    declared = set(compose().get("volumes") or {})
    used: set[str] = set()
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("${"):
                continue  # a host folder the team chooses (MIMIVERSE_REPOS)
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {sorted(declared - used)}"


def test_no_literal_secret_in_the_compose_file() -> None:
    for path, value in strings_in(compose()):
        key = path.rsplit(".", 1)[-1]
        # `secrets: [name]` names a compose secret (its value comes from the environment).
        if SECRET_KEY.search(key) and not key.startswith("secrets["):
            assert ONLY_A_VARIABLE.fullmatch(value), f"{path} holds a literal secret"
        for password in re.findall(r"://[^/\s:@]*:([^@/\s]+)@", value):
            assert ONLY_A_VARIABLE.fullmatch(password), f"{path}: literal password in a URL"
        if "requirepass" in value:
            assert re.search(r"--requirepass\s+\"?\$\$", value), f"{path}: literal Redis password"


def compose_variables() -> list[tuple[str, str | None]]:
    """Interpolated variables: compose expands values, never keys nor comments."""
    return [found for _, value in strings_in(compose()) for found in variables_in(value)]


def test_secrets_are_required_and_empty_in_the_example() -> None:
    operators = {name: op for name, op in compose_variables() if name in SECRETS}
    assert set(operators) == set(SECRETS)
    assert all(op == ":?" for op in operators.values()), operators
    example = env_example()
    assert {name: example[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    for name in SECRETS:
        with pytest.raises(MissingVariable, match=name):
            for _, value in strings_in(compose()):
                interpolate(value, {**FILLED_ENV, name: ""})


def test_every_variable_is_in_the_env_example_and_every_example_is_used() -> None:
    used = {name for name, _ in compose_variables()}
    example = set(env_example())
    assert used - example == set(), "add these to deploy/.env.example"
    # COMPOSE_PROFILES is read by compose itself, not interpolated.
    assert example - used == {"COMPOSE_PROFILES"}, "unused in docker-compose.yml"


def test_env_example_profiles_name_real_profiles() -> None:
    profiles = {p for s in services().values() for p in s.get("profiles", [])}
    assert profiles == {"cpu", "gpu", "triton"}
    assert set(env_example()["COMPOSE_PROFILES"].split(",")) <= profiles
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for combination in ("# cpu ", "# gpu ", "# gpu,triton "):
        assert combination in text


def gateway_ports(env: dict[str, str]) -> list[str]:
    return [interpolate(str(p), env) for p in services()["mimiverse"]["ports"]]


def test_gateway_is_published_on_loopback_by_default() -> None:
    assert gateway_ports({}) == ["127.0.0.1:5000:5000"]
    assert gateway_ports(FILLED_ENV) == ["127.0.0.1:5000:5000"]
    # The documented switch to serve the network:
    assert gateway_ports({**FILLED_ENV, "MIMIVERSE_BIND": "0.0.0.0"}) == ["0.0.0.0:5000:5000"]


def test_gateway_binds_all_interfaces_inside_its_container_only() -> None:
    command = services()["mimiverse"]["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    container_port = int(command[command.index("--port") + 1])
    assert gateway_ports({})[0].endswith(f":{container_port}")
    config = command[command.index("--config") + 1]
    mounts = [str(v).split(":") for v in services()["mimiverse"]["volumes"]]
    assert ["./mimiverse.toml", config, "ro"] in mounts


def test_every_other_published_port_is_loopback_only() -> None:
    for name, service in services().items():
        if name == "mimiverse":
            continue
        for mapping in service.get("ports", []):
            assert interpolate(str(mapping), {}).startswith("127.0.0.1:"), f"{name}: {mapping}"


def test_gpu_reservations_exactly_on_gpu_and_triton_profiles() -> None:
    for name, service in services().items():
        devices = gpu_devices(service)
        if GPU_PROFILES & set(service.get("profiles", [])):
            assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
        else:
            assert devices == [], f"{name} reserves a GPU outside the gpu/triton profiles"
    assert services()["dcgm-exporter"]["profiles"] == ["gpu"]
    assert services()["triton"]["profiles"] == ["triton"]


def test_both_ollama_variants_answer_as_ollama() -> None:
    cpu, gpu = services()["ollama"], services()["ollama-gpu"]
    assert (cpu["profiles"], gpu["profiles"]) == (["cpu"], ["gpu"])
    assert "ollama" in network_names("ollama-gpu", gpu)
    assert cpu["volumes"] == gpu["volumes"] == ["ollama-models:/root/.ollama"]
    assert cpu["image"] == gpu["image"]


def container_env(filled: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(v, filled) for k, v in environment_of(services()["mimiverse"]).items()}


@pytest.mark.parametrize(
    ("embedding_backends", "expected"),
    [(None, ["embedded"]), ('["triton", "embedded"]', ["triton", "embedded"])],
)
def test_gateway_settings_inside_the_container_are_valid(
    monkeypatch: pytest.MonkeyPatch, embedding_backends: str | None, expected: list[str]
) -> None:
    """The mounted mimiverse.toml plus the environment compose gives the container."""
    filled = dict(FILLED_ENV)
    if embedding_backends is not None:
        filled["MIMIVERSE_EMBEDDING_BACKENDS"] = embedding_backends
    env = container_env(filled)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(MIMIVERSE_TOML)
    assert settings.models.embedding.backends == expected
    assert settings.cache.kind == "redis"
    assert settings.cache.url == "redis://:test-redis_password@redis:6379/0"
    assert settings.index.store == "postgres"
    assert env["PGPASSWORD"] == "test-postgres_password"  # libpq reads it; not in the URL
    assert settings.index.url == "postgresql://mimiverse@postgres:5432/mimiverse"
    assert settings.index.allowed_roots == ["/repos"]
    # Tokens from .env (the editors' and Prometheus's), so the 0.0.0.0 bind is allowed.
    assert len(settings.auth.digests) == 2
    assert load_settings(MIMIVERSE_TOML, server={"host": "0.0.0.0"}).server.allowed_hosts


def test_gateway_config_points_at_compose_services_and_their_ports() -> None:
    settings = load_settings(MIMIVERSE_TOML)
    names = {alias: s for n, s in services().items() for alias in network_names(n, s)}
    urls = [b.url for b in settings.backends if b.url] + [settings.cache.url, settings.index.url]
    assert len(urls) == 4
    for url in urls:
        match = re.match(r"^[a-z]+://(?:[^@/]*@)?([^:/]+):(\d+)", str(url))
        assert match, url
        host, port = match.group(1), int(match.group(2))
        assert host in names, f"{url}: no compose service {host}"
        assert port in exposed_ports(names[host]), f"{url}: {host} does not listen on {port}"


def test_build_context_and_dockerfile() -> None:
    build = services()["mimiverse"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / "pyproject.toml").is_file()
    assert (context / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    extras = interpolate(build["args"]["EXTRAS"], {}).split(",")
    assert extras == env_example()["MIMIVERSE_EXTRAS"].split(",")
    # mimiverse.toml uses the postgres store, the embedded model and Triton.
    assert set(extras) == {"postgres", "embed", "triton"}
