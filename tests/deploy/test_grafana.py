"""deploy/grafana: provisioning that Grafana loads and a dashboard wired to it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.deploy_files import (
    DASHBOARDS_PROVIDER_FILE,
    DATASOURCES_FILE,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    load_yaml,
    metric_names,
    services,
)
from tests.deploy.test_prometheus import DCGM_METRICS, TRITON_METRICS

# The contract's gateway metrics as series names, all of which the dashboard shows.
GATEWAY_SERIES = {
    "mimiverse_requests_total", "mimiverse_request_duration_seconds_bucket",
    "mimiverse_time_to_first_token_seconds_bucket", "mimiverse_tokens_total",
    "mimiverse_in_flight_requests", "mimiverse_http_requests_total",
    "mimiverse_http_request_duration_seconds_bucket", "mimiverse_cache_requests_total",
    "mimiverse_cache_entries", "mimiverse_cache_bytes", "mimiverse_backend_up",
    "mimiverse_backend_cooldowns_total", "mimiverse_fallbacks_total", "mimiverse_index_files",
    "mimiverse_backend_in_flight",
    "mimiverse_index_chunks", "mimiverse_index_pending_embeddings",
    "mimiverse_embedding_batch_seconds_bucket", "mimiverse_gpu_info",
    "mimiverse_gpu_utilization_ratio", "mimiverse_gpu_memory_used_bytes",
    "mimiverse_gpu_memory_total_bytes", "mimiverse_gpu_temperature_celsius",
    "mimiverse_gpu_power_watts", "mimiverse_gpu_process_memory_bytes", "mimiverse_gpus",
}


def datasource() -> dict[str, Any]:
    [source] = load_yaml(DATASOURCES_FILE)["datasources"]
    found: dict[str, Any] = source
    return found


def test_provisioned_datasource_is_the_compose_prometheus() -> None:
    source = load_yaml(DATASOURCES_FILE)
    assert source["apiVersion"] == 1
    ds = datasource()
    assert (ds["type"], ds["access"]) == ("prometheus", "proxy")
    assert ds["url"] == "http://prometheus:9090"
    assert ds["isDefault"] is True and ds["uid"]
    assert "9090" in services()["prometheus"]["expose"]


def test_dashboard_provider_reads_the_mounted_dashboards() -> None:
    provider_file = load_yaml(DASHBOARDS_PROVIDER_FILE)
    assert provider_file["apiVersion"] == 1
    [provider] = provider_file["providers"]
    assert provider["type"] == "file"
    mounts = [str(v).split(":") for v in services()["grafana"]["volumes"]]
    assert ["./grafana/dashboards", provider["options"]["path"], "ro"] in mounts
    assert ["./grafana/provisioning", "/etc/grafana/provisioning", "ro"] in mounts
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/mimiverse.json"


def test_dashboard_identity_and_schema() -> None:
    board = dashboard()
    assert board["uid"] == "mimiverse-overview" and board["title"] == "Mimiverse"
    assert board["schemaVersion"] == 39
    assert board.get("id") is None  # Grafana assigns ids; a fixed one clashes on import
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_query_uses_the_provisioned_datasource() -> None:
    uid = datasource()["uid"]
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_every_query_parses(expr: str) -> None:
    assert metric_names(expr)


def test_dashboard_shows_every_gateway_triton_and_gpu_signal() -> None:
    shown: set[str] = set()
    for expr in dashboard_exprs():
        shown |= metric_names(expr)
    assert shown >= GATEWAY_SERIES, sorted(GATEWAY_SERIES - shown)
    assert {n for n in shown if n.startswith("nv_")} <= TRITON_METRICS
    assert {"nv_inference_request_success", "nv_inference_request_duration_us"} <= shown
    assert {n for n in shown if n.startswith("DCGM_")} <= DCGM_METRICS
    assert {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP",
            "DCGM_FI_DEV_POWER_USAGE"} <= shown
    names = {n for n in shown if not n.startswith(("mimiverse_", "nv_", "DCGM_"))}
    assert names == set(), "metrics nobody exposes"


def test_latency_panels_show_p50_and_p95_per_task() -> None:
    by_title = {p["title"]: p for p in dashboard_panels()}
    for title in ("Request latency p50 / p95 by task (model answers)",
                  "Time to first token p50 / p95 by task"):
        exprs = [t["expr"] for t in by_title[title]["targets"]]
        assert [e.split(",")[0] for e in exprs] == ["histogram_quantile(0.5",
                                                    "histogram_quantile(0.95"]
        assert all("sum by (le, task)" in e for e in exprs)
