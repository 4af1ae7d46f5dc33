"""Health of the backends (db, cache, storage) and the instance's lifecycle (ready, draining)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog

from mlplatform.metrics import Metrics

log = structlog.get_logger(__name__)

Status = Literal["UP", "DOWN"]
Check = Callable[[], Awaitable[None]]


@dataclass
class ComponentHealth:
    status: Status
    latency_ms: float
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class Lifecycle:
    """Start-up work done, and whether the instance is draining before shutdown. In a server of several worker
    processes (`server.workers`, sharing `folder`), each one marks itself started there, and the instance is
    ready only when every worker is: a probe answered by the first worker up must not send traffic to one
    still starting (it would answer 503)."""

    started: bool = False
    draining: bool = False
    startup_error: str | None = None
    workers: int = 1
    folder: str | None = None

    def mark_started(self) -> None:
        self.started = True
        if self.folder is not None:
            try:
                (Path(self.folder) / f"{STARTED_MARK}{os.getpid()}").touch()
            except OSError as exc:  # readiness then says how many workers it sees started
                log.error("cannot mark this worker started", folder=self.folder, error=str(exc))

    def unmark(self) -> None:
        if self.folder is not None:
            (Path(self.folder) / f"{STARTED_MARK}{os.getpid()}").unlink(missing_ok=True)

    def workers_started(self) -> int:
        """How many of the server's worker processes are started (their mark there, and still running)."""
        if self.folder is None:
            return int(self.started)
        count = 0
        for mark in Path(self.folder).glob(f"{STARTED_MARK}*"):
            pid = mark.name.removeprefix(STARTED_MARK)
            if pid.isdigit() and _running(int(pid)):
                count += 1
        return count


STARTED_MARK = "started-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not one of ours, whose pid was reused
        return False
    return True


class HealthService:
    """Runs each backend's ping with a timeout. The database decides UP/DOWN; others degrade."""

    def __init__(
        self,
        *,
        checks: dict[str, Check],
        descriptions: dict[str, str],
        lifecycle: Lifecycle,
        metrics: Metrics,
        readiness_components: list[str],
        timeout: float = 2.0,
    ) -> None:
        self.checks = checks
        self.descriptions = descriptions
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.readiness_components = readiness_components
        self.timeout = timeout

    async def component(self, name: str) -> ComponentHealth:
        started = time.perf_counter()
        details = {"backend": self.descriptions.get(name, "")}
        try:
            async with asyncio.timeout(self.timeout):
                await self.checks[name]()
            status: Status = "UP"
        except TimeoutError:
            status, details["error"] = "DOWN", f"no answer within {self.timeout:g}s"
        except Exception as exc:  # every failure of a backend is a DOWN, never a crash
            status, details["error"] = "DOWN", f"{type(exc).__name__}: {exc}"[:300]
        latency = round((time.perf_counter() - started) * 1000, 3)
        self.metrics.component_up.labels(name).set(1 if status == "UP" else 0)
        self.metrics.component_latency.labels(name).set(latency)
        return ComponentHealth(status=status, latency_ms=latency, details=details)

    async def components(self, names: list[str] | None = None) -> dict[str, ComponentHealth]:
        wanted = names if names is not None else list(self.checks)
        results = await asyncio.gather(*(self.component(name) for name in wanted))
        return dict(zip(wanted, results, strict=True))

    async def watch(self, interval: float) -> None:
        """Until cancelled: check every component each `interval` seconds, so `ml_health_component_up`
        stays current (alert rules read it) whether or not anything calls /actuator/health."""
        while True:
            await self.components()
            await asyncio.sleep(interval)

    async def overall(self) -> tuple[str, dict[str, ComponentHealth]]:
        """UP; DEGRADED when a non-critical backend (cache, storage) is down; DOWN when the database is."""
        parts = await self.components()
        if parts.get("db") and parts["db"].status == "DOWN":
            return "DOWN", parts
        if any(part.status == "DOWN" for part in parts.values()):
            return "DEGRADED", parts
        return "UP", parts

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        reasons: dict[str, str] = {}
        if self.lifecycle.draining:
            reasons["lifecycle"] = "draining"
        elif self.lifecycle.startup_error:
            reasons["lifecycle"] = f"start-up failed: {self.lifecycle.startup_error}"
        elif not self.lifecycle.started:
            reasons["lifecycle"] = "starting"
        elif self.lifecycle.workers > 1 and (up := self.lifecycle.workers_started()) < self.lifecycle.workers:
            reasons["lifecycle"] = f"starting: {up} of {self.lifecycle.workers} worker processes started"
        parts = await self.components([n for n in self.readiness_components if n in self.checks])
        for name, part in parts.items():
            if part.status == "DOWN":
                reasons[name] = part.details.get("error", "DOWN")
        return not reasons, reasons
