"""Process and host figures as Prometheus gauges, read at scrape time (psutil)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
from prometheus_client import ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry


class HostCollector(Collector):
    """Host CPU, memory and the data dir's disk: the signals behind the CPU/memory/disk alerts."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "ragvigil_host_cpu_utilization_ratio",
            "Host CPU utilisation since the previous scrape (0-1).",
            value=psutil.cpu_percent(interval=None) / 100,
        )
        mem = psutil.virtual_memory()
        yield GaugeMetricFamily(
            "ragvigil_host_memory_used_ratio",
            "Host memory in use (0-1).",
            value=(mem.total - mem.available) / mem.total,
        )
        yield GaugeMetricFamily("ragvigil_host_memory_total_bytes", "Host memory.", value=mem.total)
        disk = psutil.disk_usage(str(self.data_dir if self.data_dir.exists() else self.data_dir.parent))
        yield GaugeMetricFamily(
            "ragvigil_data_disk_used_ratio", "Disk holding the data dir: share in use (0-1).", value=disk.percent / 100
        )
        yield GaugeMetricFamily(
            "ragvigil_data_disk_free_bytes", "Disk holding the data dir: free bytes.", value=disk.free
        )


_registered: dict[int, HostCollector] = {}


def register_system_collectors(registry: CollectorRegistry, data_dir: Path) -> HostCollector:
    """Process CPU/RSS/open fds (prometheus_client's own) and host figures; once per registry.

    Returns the registry's host collector: its ``data_dir`` may be pointed elsewhere later (the
    runtime in force, see ``ops.process``) without registering a second one.
    """
    host = _registered.get(id(registry))
    if host is None:
        ProcessCollector(registry=registry)
        host = _registered[id(registry)] = HostCollector(data_dir)
        registry.register(host)
    return host
