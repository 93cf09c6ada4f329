"""GPU metrics read through NVML at scrape time (a Prometheus custom collector).

Per GPU: utilisation, memory used and total, temperature, power draw, and the memory of
each compute process. A field the GPU or driver does not support (NVMLError_NotSupported)
is left out for that GPU; the rest is still exported. Without a GPU or driver, `nvmlInit`
fails: that is logged once (info) and only `mimiverse_gpus 0` is exported.

The NVML functions are injected (`nvml`, the `pynvml` module by default), so tests can
drive every path with a fake that raises NVML's real error classes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pynvml
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

log = logging.getLogger("mimiverse.telemetry")

T = TypeVar("T")


class NvmlApi(Protocol):
    """The NVML calls used here, named and shaped as in `pynvml`."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # .gpu: percent
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # .used, .total: bytes
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...  # Celsius
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...  # milliwatts
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]: ...


class GpuCollector:
    """Register in a CollectorRegistry; NVML is initialised on the first scrape."""

    def __init__(self, nvml: NvmlApi | None = None) -> None:
        self._nvml: NvmlApi = nvml if nvml is not None else pynvml
        self._lock = threading.Lock()  # scrapes run in worker threads
        self._available: bool | None = None  # None: not tried yet

    def _start(self) -> bool:
        with self._lock:
            if self._available is None:
                try:
                    self._nvml.nvmlInit()
                    self._available = True
                except pynvml.NVMLError as exc:
                    # No GPU, no driver, no libnvidia-ml: a normal CPU-only machine.
                    log.info("no GPU metrics: NVML is not available (%s)", exc)
                    self._available = False
            return self._available

    def close(self) -> None:
        with self._lock:
            if self._available:
                try:
                    self._nvml.nvmlShutdown()
                except pynvml.NVMLError as exc:
                    log.debug("nvmlShutdown failed: %s", exc)
            self._available = None

    def collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily("mimiverse_gpus", "GPUs NVML sees (0 without a GPU or "
                                  "driver)")
        if not self._start():
            count.add_metric([], 0)
            yield count
            return
        nvml = self._nvml
        n = self._read("device count", nvml.nvmlDeviceGetCount) or 0
        count.add_metric([], n)
        yield count
        gpu = ["gpu"]
        info = GaugeMetricFamily("mimiverse_gpu_info", "1 per GPU, naming it",
                                 labels=["gpu", "name", "uuid"])
        util = GaugeMetricFamily("mimiverse_gpu_utilization_ratio", "Share of the last "
                                 "sample period a kernel ran (0-1)", labels=gpu)
        used = GaugeMetricFamily("mimiverse_gpu_memory_used_bytes", "GPU memory in use",
                                 labels=gpu)
        total = GaugeMetricFamily("mimiverse_gpu_memory_total_bytes", "GPU memory "
                                  "installed", labels=gpu)
        temp = GaugeMetricFamily("mimiverse_gpu_temperature_celsius", "GPU die "
                                 "temperature", labels=gpu)
        power = GaugeMetricFamily("mimiverse_gpu_power_watts", "Power draw of the GPU "
                                  "board", labels=gpu)
        procs = GaugeMetricFamily("mimiverse_gpu_process_memory_bytes", "GPU memory used "
                                  "by each compute process", labels=["gpu", "pid"])
        for index in range(n):
            handle = self._read("handle", nvml.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            g = str(index)
            name = self._read("name", nvml.nvmlDeviceGetName, handle)
            uuid = self._read("uuid", nvml.nvmlDeviceGetUUID, handle)
            info.add_metric([g, _text(name), _text(uuid)], 1)
            rates = self._read("utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
            if rates is not None:
                util.add_metric([g], rates.gpu / 100)
            memory = self._read("memory", nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                used.add_metric([g], memory.used)
                total.add_metric([g], memory.total)
            celsius = self._read("temperature", nvml.nvmlDeviceGetTemperature, handle,
                                 pynvml.NVML_TEMPERATURE_GPU)
            if celsius is not None:
                temp.add_metric([g], celsius)
            milliwatts = self._read("power", nvml.nvmlDeviceGetPowerUsage, handle)
            if milliwatts is not None:
                power.add_metric([g], milliwatts / 1000)
            running = self._read("processes", nvml.nvmlDeviceGetComputeRunningProcesses,
                                 handle)
            for proc in running or ():
                # None where the driver cannot tell (e.g. without permission to see it).
                if proc.usedGpuMemory is not None:
                    procs.add_metric([g, str(proc.pid)], proc.usedGpuMemory)
        yield from (info, util, used, total, temp, power, procs)

    def _read(self, what: str, call: Callable[..., T], *args: Any) -> T | None:
        """`call(*args)`, or None when NVML cannot answer it for this GPU."""
        try:
            return call(*args)
        except pynvml.NVMLError_NotSupported:
            return None
        except pynvml.NVMLError as exc:
            log.debug("NVML %s failed: %s", what, exc)
            return None


def _text(value: str | bytes | None) -> str:
    if value is None:
        return "unknown"
    return value.decode(errors="replace") if isinstance(value, bytes) else value
