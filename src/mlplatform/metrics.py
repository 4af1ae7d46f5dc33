"""Prometheus metrics on the app's own registry, `management.tags` labels on every ml_* series."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


class TaggedRegistry(CollectorRegistry):
    """A registry that adds constant labels (application, environment) to every ml_* sample."""

    def __init__(self, tags: dict[str, str]) -> None:
        super().__init__(auto_describe=True)
        self.tags = tags

    def collect(self) -> Iterator[Metric]:
        for family in super().collect():
            if family.name.startswith("ml_") and self.tags:
                family.samples = [
                    sample._replace(labels={**self.tags, **sample.labels}) for sample in family.samples
                ]
            yield family


def memory_limit_bytes() -> int:
    """The container's memory limit (cgroup v2) when there is one, else the machine's memory."""
    try:
        raw = _CGROUP_LIMIT.read_text().strip()
        if raw.isdigit():
            return min(int(raw), psutil.virtual_memory().total)
    except OSError:
        pass
    return int(psutil.virtual_memory().total)


class SystemCollector(Collector):
    """ml_system_* gauges, read at scrape time."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.limit = memory_limit_bytes()
        psutil.cpu_percent(interval=None)  # primes the counter: the first real reading is then meaningful

    def collect(self) -> Iterable[Metric]:
        rss = self.process.memory_info().rss
        yield GaugeMetricFamily(
            "ml_system_memory_used_mb", "Resident memory of this instance, MB", rss / 2**20
        )
        yield GaugeMetricFamily(
            "ml_system_memory_usage_percent",
            "Resident memory as a percentage of the container limit (or machine memory)",
            100.0 * rss / self.limit,
        )
        yield GaugeMetricFamily(
            "ml_system_cpu_usage_percent",
            "CPU usage of the machine since the previous scrape, percent",
            psutil.cpu_percent(interval=None),
        )


class Metrics:
    """Every collector of one app instance. Domains add theirs through `registry`."""

    def __init__(self, *, application: str, environment: str) -> None:
        self.registry = TaggedRegistry({"application": application, "environment": environment})
        ProcessCollector(registry=self.registry)
        self.registry.register(SystemCollector())
        self.http_requests = Histogram(
            "http_server_requests_seconds",
            "HTTP requests by route",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.component_up = Gauge(
            "ml_health_component_up",
            "1 when a backend answered its last health check",
            ["component"],
            registry=self.registry,
        )
        self.component_latency = Gauge(
            "ml_health_component_latency_ms",
            "Latency of the last health check of a backend, ms",
            ["component"],
            registry=self.registry,
        )
        self.cache_errors = Counter(
            "ml_cache_errors_total",
            "Cache operations that failed or were skipped because the cache was unavailable",
            ["operation"],
            registry=self.registry,
        )
