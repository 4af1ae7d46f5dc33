"""Prometheus metrics on the app's own registry, `management.tags` labels on every ml_* series.

With `server.workers > 1` the server runs several processes. `serve` then points `PROMETHEUS_MULTIPROC_DIR`
at a folder of its own before the workers start; prometheus_client keeps every counter, histogram and gauge
value in files there, and a scrape answered by any worker adds up all of them (`Metrics.exposition`). Values
only a process knows (throughput, queue depth, loaded models, memory) are `sampled` gauges: read at scrape
time in a single process, copied every second into shared gauges otherwise.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 1.0
# A sampled gauge's values by label values (`()` for an unlabelled gauge).
Reading = dict[tuple[str, ...], float]
# How the workers' values of a sampled gauge add up (prometheus_client's `multiprocess_mode`).
Mode = Literal["livesum", "livemax", "livemostrecent"]


def multiprocess_dir() -> str | None:
    """The shared metrics folder of a multi-process server, or None in a single process."""
    return os.environ.get(MULTIPROCESS_ENV) or None


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


class _Sampled(Collector):
    """A gauge read at scrape time (single process)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Reading]):
        self.name, self.documentation, self.labels, self.read = name, documentation, list(labels), read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in sorted(self.read().items()):
            family.add_metric(list(key), value)
        yield family


class _Shared:
    """A gauge copied from this process into the shared files (multi-process); `mode` adds up the workers."""

    def __init__(self, gauge: Gauge, read: Callable[[], Reading]) -> None:
        self.gauge, self.read = gauge, read
        self.seen: set[tuple[str, ...]] = set()

    def sample(self) -> None:
        values = self.read()
        for key in self.seen - values.keys():  # a label this process no longer has (an unloaded model)
            self._child(key).set(0)
        for key, value in values.items():
            self._child(key).set(value)
        self.seen |= values.keys()

    def _child(self, key: tuple[str, ...]) -> Gauge:
        return self.gauge.labels(*key) if key else self.gauge


class _System:
    """ml_system_* readings of this process."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.limit = memory_limit_bytes()
        psutil.cpu_percent(interval=None)  # primes the counter: the first real reading is then meaningful

    def memory_mb(self) -> Reading:
        return {(): self.process.memory_info().rss / 2**20}

    def memory_percent(self) -> Reading:
        return {(): 100.0 * self.process.memory_info().rss / self.limit}

    def cpu_percent(self) -> Reading:
        return {(): psutil.cpu_percent(interval=None)}


class Metrics:
    """Every collector of one app instance. Domains add theirs through `registry` and `sampled`."""

    def __init__(self, *, application: str, environment: str) -> None:
        self.tags = {"application": application, "environment": environment}
        self.registry = TaggedRegistry(self.tags)
        self.multiprocess = multiprocess_dir()
        self._shared: list[_Shared] = []
        self._exposition: CollectorRegistry = self.registry
        if self.multiprocess is None:
            ProcessCollector(registry=self.registry)  # process_*: one process's own, so not with workers
        else:
            self._exposition = TaggedRegistry(self.tags)
            MultiProcessCollector(self._exposition, path=self.multiprocess)  # type: ignore[no-untyped-call]
        system = _System()
        self.sampled(
            "ml_system_memory_used_mb",
            "Resident memory of this instance, MB",
            system.memory_mb,
            mode="livesum",
        )
        self.sampled(
            "ml_system_memory_usage_percent",
            "Resident memory as a percentage of the container limit (or machine memory)",
            system.memory_percent,
            mode="livesum",
        )
        self.sampled(
            "ml_system_cpu_usage_percent",
            "CPU usage of the machine since the previous reading, percent",
            system.cpu_percent,
            mode="livemax",
        )
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
            multiprocess_mode="livemostrecent",
        )
        self.component_latency = Gauge(
            "ml_health_component_latency_ms",
            "Latency of the last health check of a backend, ms",
            ["component"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.cache_errors = Counter(
            "ml_cache_errors_total",
            "Cache operations that failed or were skipped because the cache was unavailable",
            ["operation"],
            registry=self.registry,
        )

    def sampled(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Reading],
        *,
        labels: Sequence[str] = (),
        mode: Mode,
    ) -> None:
        """A gauge whose values only this process knows. `mode` says how the workers' values add up
        (prometheus_client's `multiprocess_mode`: livesum, livemax, ...)."""
        if self.multiprocess is None:
            self.registry.register(_Sampled(name, documentation, labels, read))
            return
        gauge = Gauge(name, documentation, list(labels), registry=self.registry, multiprocess_mode=mode)
        self._shared.append(_Shared(gauge, read))

    def sample(self) -> None:
        """Copy every sampled gauge into the shared files (multi-process only; a no-op otherwise)."""
        for shared in self._shared:
            shared.sample()

    async def run_sampler(self) -> None:
        """Until cancelled: `sample` every `SAMPLE_SECONDS`; at the end, this worker's live gauges go."""
        try:
            while True:
                self.sample()
                await asyncio.sleep(SAMPLE_SECONDS)
        finally:
            if self.multiprocess is not None:
                mark_process_dead(os.getpid(), self.multiprocess)  # type: ignore[no-untyped-call]

    def exposition(self) -> CollectorRegistry:
        """What a scrape reads: this registry, or every worker's values in a multi-process server."""
        return self._exposition
