"""deploy/prometheus: scrape targets that exist in compose, alert rules that parse and
name only metrics that someone exposes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.deploy_files import (
    ALERTS_FILE,
    PROMETHEUS_FILE,
    alert_rules,
    exposed_ports,
    load_yaml,
    metric_names,
    network_names,
    services,
)

# Written down from the exporters' documentation (no such server runs here):
# Triton's metrics guide (docs/user_guide/metrics.md: inference request, GPU, CPU metrics)
# and dcgm-exporter's etc/default-counters.csv (FB_* in MiB, GPU_UTIL in %).
TRITON_METRICS = frozenset({
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_pending_request_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption",
    "nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes",
})
DCGM_METRICS = frozenset({
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
})
PROMETHEUS_BUILTINS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
# Mimiverse's own names are checked against a live /metrics page in test_metrics_names.py.
MIMIVERSE_PREFIX = "mimiverse_"


def scrape_configs() -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = load_yaml(PROMETHEUS_FILE)["scrape_configs"]
    return configs


def targets(config: dict[str, Any]) -> list[tuple[str, int]]:
    found = [
        (host, int(port))
        for static in config.get("static_configs", [])
        for host, port in (t.rsplit(":", 1) for t in static["targets"])
    ]
    for dns in config.get("dns_sd_configs", []):
        assert dns.get("type", "SRV") == "A", "A records need no SRV set-up in compose"
        found += [(name, int(dns["port"])) for name in dns["names"]]
    return found


def test_every_scrape_target_is_a_compose_service_port() -> None:
    by_name = {alias: s for n, s in services().items() for alias in network_names(n, s)}
    seen: dict[str, tuple[str, int]] = {}
    for config in scrape_configs():
        for host, port in targets(config):
            if config["job_name"] == "prometheus":
                assert (host, port) == ("localhost", 9090)  # itself
                host = "prometheus"
            assert host in by_name, f"job {config['job_name']}: no compose service {host}"
            assert port in exposed_ports(by_name[host]), f"{host} does not listen on {port}"
            seen[config["job_name"]] = (host, port)
    assert seen == {
        "mimiverse": ("mimiverse", 5000),
        "triton": ("triton", 8002),
        "dcgm": ("dcgm-exporter", 9400),
        "prometheus": ("prometheus", 9090),
    }


def test_compose_services_are_discovered_by_dns() -> None:
    """`--scale mimiverse=N` must give N targets, not one name load-balanced by DNS; a
    service whose profile is off must give no target rather than one always down."""
    for config in scrape_configs():
        if config["job_name"] != "prometheus":
            assert "static_configs" not in config, config["job_name"]
            assert config["metrics_path"] == "/metrics"


def test_rule_files_are_the_mounted_alerts_file() -> None:
    mounts = [str(v).split(":") for v in services()["prometheus"]["volumes"]]
    assert ["./prometheus", "/etc/prometheus", "ro"] in mounts
    rule_files = load_yaml(PROMETHEUS_FILE)["rule_files"]
    assert rule_files == [f"/etc/prometheus/{ALERTS_FILE.name}"]


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert DURATION.match(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"].split()) >= 8, rule["alert"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expression_parses_and_names_known_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, "an alert must select something"
    unknown = {
        n for n in names
        if not n.startswith(MIMIVERSE_PREFIX)
        and n not in TRITON_METRICS | DCGM_METRICS | PROMETHEUS_BUILTINS
    }
    assert unknown == set()


def test_the_alerts_the_deployment_promises_exist() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    wanted = {
        # ... except a triton backend while Triton has no scrape target (profile off)
        "MimiverseBackendDown": {"mimiverse_backend_up", "up"},
        "MimiverseFallbackRateHigh": {"mimiverse_fallbacks_total", "mimiverse_requests_total"},
        "MimiverseCompletionLatencyHigh": {"mimiverse_request_duration_seconds_bucket",
                                           "mimiverse_request_duration_seconds_count"},
        "MimiverseCacheHitRateLow": {"mimiverse_cache_requests_total"},
        "GpuMemoryNearFull": {"mimiverse_gpu_memory_used_bytes",
                              "mimiverse_gpu_memory_total_bytes"},
        "DcgmGpuMemoryNearFull": {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"},
    }
    for alert, metrics in wanted.items():
        assert metric_names(exprs[alert]) == metrics, alert
    assert 'task="completion"' in exprs["MimiverseCompletionLatencyHigh"]
    assert 'absent(up{job="triton"})' in exprs["MimiverseBackendDown"]
    assert 'absent(up{job="mimiverse"} == 1)' in exprs["MimiverseDown"]


def test_a_broken_expression_is_caught() -> None:
    """The parser behind these checks refuses what Prometheus would refuse."""
    for bad in ("rate(mimiverse_requests_total)", "sum(rate(x[5m])", "ratee(x[5m])"):
        with pytest.raises(ValueError):
            metric_names(bad)
