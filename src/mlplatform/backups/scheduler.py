"""Scheduled backups: every `backup.schedule-seconds`, on one instance of however many, then retention.

The instances share the scheduled-check lease table (one row per scheduled task): each polls, and the one
whose claim lands once a backup is due runs it, holding the lease for `backup.timeout-seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import timedelta

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from mlplatform.backups.manifest import Manifest
from mlplatform.backups.service import BackupService
from mlplatform.clock import utcnow
from mlplatform.ids import new_id
from mlplatform.monitoring.alerts.store import CheckLeaseStore
from mlplatform.periodic import PeriodicTask
from mlplatform.settings import BackupSettings

log = structlog.get_logger(__name__)
LEASE_NAME = "scheduled-backup"
MAX_POLL_SECONDS = 10.0
RELEASE_TIMEOUT_SECONDS = 2.0


class BackupScheduler:
    def __init__(
        self,
        *,
        service: BackupService,
        leases: CheckLeaseStore,
        settings: BackupSettings,
        registry: CollectorRegistry,
    ) -> None:
        self.service = service
        self.leases = leases
        self.settings = settings
        self.every = timedelta(seconds=settings.schedule_seconds)
        self.poll = min(settings.schedule_seconds / 2, MAX_POLL_SECONDS)
        self.holder = f"{socket.gethostname()[:24]}:{os.getpid()}:{new_id()}"
        self._loop = PeriodicTask(
            "scheduled-backups", self.tick, lambda: self.poll, failure="scheduled backup failed"
        )
        self.runs = Counter(
            "ml_backups",
            "Scheduled backups run by this instance, by result: ok or failed",
            ["result"],
            registry=registry,
        )
        self.last_success = Gauge(
            "ml_backup_last_success_timestamp_seconds",
            "When the last scheduled backup run by this instance was written (Unix time)",
            registry=registry,
            multiprocess_mode="max",
        )

    def start(self) -> None:
        if self.settings.schedule_seconds > 0:
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self.service.close()

    async def tick(self) -> Manifest | None:
        """Run a backup if this instance wins the claim; None when none is due or it runs elsewhere."""
        timeout = float(self.settings.timeout_seconds)
        hold = timedelta(seconds=timeout + RELEASE_TIMEOUT_SECONDS)
        claimed = await self.leases.claim(
            LEASE_NAME, holder=self.holder, now=utcnow(), every=self.every, hold=hold
        )
        if not claimed:
            return None
        try:
            async with asyncio.timeout(timeout):
                manifest = await self.run()
        except BaseException:
            self.runs.labels("failed").inc()
            raise
        finally:  # bounded; an unreleased lease expires after `hold`
            with contextlib.suppress(Exception):
                async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                    await self.leases.release(LEASE_NAME, holder=self.holder)
        self.runs.labels("ok").inc()
        self.last_success.set(manifest.created_at.timestamp())
        return manifest

    async def run(self) -> Manifest:
        location = self.service.location()
        manifest, _ = await self.service.create(location=location, with_logs=self.settings.with_logs)
        if self.settings.retention > 0:
            try:
                await self.service.prune(location, keep=self.settings.retention)
            except Exception as exc:  # the backup is written; old ones go next time
                log.warning("backup retention failed", error=f"{type(exc).__name__}: {exc}"[:300])
        return manifest
