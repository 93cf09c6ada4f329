"""GPU metrics through NVML: the real library on this GPU-less machine, and a fake NVML
(the same functions, raising NVML's own error classes) for two GPUs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mimiverse.telemetry.gpu import GpuCollector
from tests.api.conftest import Serve
from tests.servers.harness import ServerHandle
from tests.support.app_server import settings_for
from tests.telemetry.scrape import Samples, labels, parse, scrape

GIB = 2**30


def collect(collector: GpuCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # NVML maps the code to its subclass, as the library does


@dataclass
class Utilization:
    gpu: int  # percent
    memory: int


@dataclass
class Memory:
    total: int
    free: int
    used: int


@dataclass
class Process:
    pid: int
    usedGpuMemory: int | None  # NVML's field name


@dataclass
class FakeGpu:
    name: bytes | str
    uuid: str
    utilization: int | None
    memory: Memory
    celsius: int | None
    milliwatts: int | None
    processes: list[Process] | None


class FakeNvml:
    """NVML's Python API as pynvml shapes it; None in a field = NVML_ERROR_NOT_SUPPORTED."""

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise nvml_error(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes | str:
        return gpu.name

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Utilization:
        return Utilization(self._supported(gpu.utilization), 0)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> Memory:
        return gpu.memory

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._supported(gpu.celsius)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return self._supported(gpu.milliwatts)

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[Process]:
        return self._supported(gpu.processes)

    def _supported(self, value: Any) -> Any:
        if value is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value


TWO_GPUS = [
    FakeGpu(
        name=b"NVIDIA H100 80GB HBM3", uuid="GPU-0b0c5a2e-1111-2222-3333-444455556666",
        utilization=37, memory=Memory(total=80 * GIB, free=70 * GIB, used=10 * GIB),
        celsius=45, milliwatts=312_500,
        # pid 4343's memory is hidden from us (another container): left out.
        processes=[Process(4242, 8 * GIB), Process(4343, None)],
    ),
    FakeGpu(
        name="NVIDIA L4", uuid="GPU-7e7e7e7e-aaaa-bbbb-cccc-ddddeeeeffff",
        utilization=0, memory=Memory(total=24 * GIB, free=24 * GIB, used=0),
        celsius=None, milliwatts=None, processes=None,  # not supported on this one
    ),
]


def test_two_gpus_with_unsupported_fields() -> None:
    nvml = FakeNvml(TWO_GPUS)
    collector = GpuCollector(nvml)

    samples = collect(collector)

    assert dict(samples) == {
        ("mimiverse_gpus", ()): 2,
        ("mimiverse_gpu_info", labels(gpu="0", name="NVIDIA H100 80GB HBM3",
                                      uuid="GPU-0b0c5a2e-1111-2222-3333-444455556666")): 1,
        ("mimiverse_gpu_info", labels(gpu="1", name="NVIDIA L4",
                                      uuid="GPU-7e7e7e7e-aaaa-bbbb-cccc-ddddeeeeffff")): 1,
        ("mimiverse_gpu_utilization_ratio", labels(gpu="0")): 0.37,
        ("mimiverse_gpu_utilization_ratio", labels(gpu="1")): 0.0,
        ("mimiverse_gpu_memory_used_bytes", labels(gpu="0")): 10 * GIB,
        ("mimiverse_gpu_memory_used_bytes", labels(gpu="1")): 0,
        ("mimiverse_gpu_memory_total_bytes", labels(gpu="0")): 80 * GIB,
        ("mimiverse_gpu_memory_total_bytes", labels(gpu="1")): 24 * GIB,
        ("mimiverse_gpu_temperature_celsius", labels(gpu="0")): 45,
        ("mimiverse_gpu_power_watts", labels(gpu="0")): 312.5,
        ("mimiverse_gpu_process_memory_bytes", labels(gpu="0", pid="4242")): 8 * GIB,
    }
    collect(collector)
    assert nvml.inits == 1  # once, not per scrape
    collector.close()
    assert nvml.shutdowns == 1


def test_a_gpu_lost_between_scrapes_drops_its_fields_not_the_scrape() -> None:
    nvml = FakeNvml([TWO_GPUS[1]])
    collector = GpuCollector(nvml)
    assert collect(collector).get_value("mimiverse_gpu_memory_used_bytes", gpu="0") == 0

    def lost(gpu: FakeGpu) -> Memory:
        raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)

    nvml.nvmlDeviceGetMemoryInfo = lost  # type: ignore[method-assign]
    samples = collect(collector)
    assert samples.series("mimiverse_gpu_memory_used_bytes") == {}
    assert samples.series("mimiverse_gpu_utilization_ratio") == {labels(gpu="0"): 0.0}


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
                                  pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_no_driver_means_zero_gpus(code: int, caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(TWO_GPUS, init_error=code)
    collector = GpuCollector(nvml)
    with caplog.at_level(logging.INFO, logger="mimiverse.telemetry"):
        assert dict(collect(collector)) == {("mimiverse_gpus", ()): 0}
        assert dict(collect(collector)) == {("mimiverse_gpus", ()): 0}
    assert nvml.inits == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"no GPU metrics: NVML is not available ({nvml_error(code)})"
    ]
    collector.close()
    assert nvml.shutdowns == 0  # never initialised


def test_real_nvml_on_this_machine_without_a_gpu(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):  # what makes this the real path
        pynvml.nvmlInit()
    collector = GpuCollector()
    with caplog.at_level(logging.INFO, logger="mimiverse.telemetry"):
        first, second = collect(collector), collect(collector)
    assert dict(first) == dict(second) == {("mimiverse_gpus", ()): 0}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "no GPU metrics: NVML is not available (NVML Shared Library Not Found)")
    ]


async def test_the_app_exports_zero_gpus_here(
    serve: Serve, ollama_server: ServerHandle, http: httpx.AsyncClient
) -> None:
    app = serve(settings_for(("b", "ollama", ollama_server.url)))
    samples = await scrape(http, app.url)
    assert samples.get_value("mimiverse_gpus") == 0
    assert [n for n in samples.names() if n.startswith("mimiverse_gpu")] == ["mimiverse_gpus"]
