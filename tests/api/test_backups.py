"""Backups and restores for real: every table filled through the API, exported, restored into PostgreSQL
from SQLite and from PostgreSQL, compared row by row; corrupt, partial and unsafe restores refused with the
target left as it was; retention; scheduled backups on one instance of two."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import JSON, create_engine, inspect, select

from mlplatform import db
from mlplatform.app import create_app
from mlplatform.backups.manifest import LOG_TABLES, MANIFEST, BackupError
from mlplatform.backups.progress import Reporter
from mlplatform.backups.service import BackupService
from mlplatform.clock import as_utc, utcnow
from mlplatform.ids import new_id
from mlplatform.monitoring.checks import counter_totals
from mlplatform.platform import Platform
from mlplatform.settings import BackupSettings, DatabaseSettings, Settings, StorageSettings
from mlplatform.tables import metadata
from tests.api.conftest import ADMIN_KEY, AppFactory, settings_for, two_instances, wait_started
from tests.api.models import FEATURES, migrate, reference, upload
from tests.api.test_monitoring_api import batch, logged, single
from tests.api.test_training_api import TERMINAL, table, wait_for

ALL_TABLES = [t.name for t in metadata.sorted_tables]
QUIET = {"monitoring": {"enabled": False}}


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Platform]]:
    """An app started and, on exit, stopped: its database is still after that."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"X-API-Key": ADMIN_KEY}
        ) as client:
            platform: Platform = app.state.platform
            await wait_started(platform)
            yield client, platform


async def ok(response: Any, status: int = 200) -> Any:
    response = await response
    assert response.status_code == status, response.text
    return response.json()


async def populate(client: httpx.AsyncClient, platform: Platform, folder: Path) -> None:
    """A row in every table, through the API and the services, as users make them."""
    folder.mkdir(parents=True, exist_ok=True)
    viewer = await ok(
        client.post("/api/admin/api-keys", json={"name": "v", "role": "viewer", "owner": "ann"}), 201
    )
    await ok(client.post("/api/admin/api-keys", json={"name": "p", "role": "predictor", "owner": "bob"}), 201)
    await ok(client.delete(f"/api/admin/api-keys/{viewer['id']}"))

    first = reference("sklearn-forest-skops", folder)
    frame = "\n".join([",".join(FEATURES), *(",".join(f"{v:.6f}" for v in row) for row in first.X[:80])])
    files = {
        "file": (first.path.name, first.path.read_bytes(), "application/octet-stream"),
        "reference": ("reference.csv", frame.encode(), "text/csv"),
    }
    data = {"metadata": json.dumps({**first.metadata, "description": "forest ☃", "tags": {"team": "risk"}})}
    await ok(client.post("/api/ml/models/clf/versions", files=files, data=data), 201)
    second = reference("xgboost-ubj", folder)
    await upload(client, "clf", second.path, second.metadata)
    await ok(client.post("/api/ml/models/clf/versions/2/stage", json={"stage": "production"}))
    await ok(client.put("/api/ml/models/clf/aliases/champion", json={"version": 1}))

    content, _ = table(120)
    dataset = await ok(
        client.post("/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": "houses"}), 201
    )
    search = {"strategy": "grid", "space": {"C": {"choice": [0.5, 1.0]}}, "metric": "accuracy"}
    body = {
        "model": "houses",
        "dataset": dataset["id"],
        "target": "label",
        "features": ["x1", "x2", "x3"],
        "algorithm": "logistic_regression",
        "search": search,
    }
    job = await ok(client.post("/api/ml/training-jobs", json=body), 202)

    answers = [await single(client, "clf", first.X[i], request_id=f"r-{i}") for i in range(5)]
    many = await batch(client, "clf", first.X[5:25], request_id="bulk")
    await logged(client, "clf", 25)
    labels = [{"prediction_id": a["prediction_id"], "actual": 1} for a in answers + many["predictions"][:5]]
    await ok(client.post("/api/ml/feedback", json=labels))
    await ok(client.post("/api/ml/models/clf/drift-check", params={"version": "1"}))
    rule = {"name": "slow", "kind": "latency_p95_above", "threshold": 0.0001, "window": "1h", "model": "clf"}
    await ok(client.post("/api/ml/alert-rules", json=rule), 201)
    await platform.check_scheduler.tick()  # a lease row, and the rule fires
    assert (await ok(client.get("/api/ml/alerts")))["total"] >= 1
    experiment = {
        "name": "trees",
        "model": "clf",
        "type": "ab",
        "variants": [
            {"name": "a", "version": "1", "weight": 50},
            {"name": "b", "version": "2", "weight": 50},
        ],
        "metric": "accuracy",
    }
    await ok(client.post("/api/ml/experiments", json=experiment), 201)
    await single(client, "clf", first.X[0], request_id="in-experiment")
    await logged(client, "clf", 26)
    assert (await wait_for(client, job["id"], TERMINAL))["state"] == "succeeded"


def snapshot(url: str, tables: list[str] = ALL_TABLES) -> dict[str, list[dict[str, Any]]]:
    """Every row of `tables`, in key order, as comparable values (UTC times; SQL NULL and JSON null apart)."""
    engine = create_engine(db.sync_url(DatabaseSettings(url=url)))
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        with engine.connect() as conn:
            for name in tables:
                found = metadata.tables[name]
                nulls = [
                    c.is_(None).label(f"{c.name}__is_null") for c in found.columns if isinstance(c.type, JSON)
                ]
                query = select(found, *nulls).order_by(*found.primary_key.columns)
                rows[name] = [
                    {k: as_utc(v) if hasattr(v, "tzinfo") else v for k, v in r._mapping.items()}
                    for r in conn.execute(query)
                ]
    finally:
        engine.dispose()
    return rows


def counts(url: str) -> dict[str, int]:
    return {name: len(found) for name, found in snapshot(url).items()}


def table_names(url: str) -> set[str]:
    engine = create_engine(db.sync_url(DatabaseSettings(url=url)))
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def service(url: str, storage: str | None = None, **storage_extra: Any) -> BackupService:
    return BackupService(
        database=DatabaseSettings(url=url),
        storage=StorageSettings(url=storage or "file:///nonexistent", **storage_extra),
        settings=BackupSettings(),
    )


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    from tests.e2e.conftest import clean_environment

    command = [sys.executable, "-c", "from mlplatform.cli import app; app()", *args]
    env = {"COLUMNS": "200", **env}
    return subprocess.run(
        command, env=clean_environment(env), cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def test_sqlite_to_postgresql_through_the_cli_keeps_every_row(
    tmp_path: Path, postgres_url: str
) -> None:
    source = settings_for(tmp_path / "source", ml=QUIET)
    async with running(source) as (client, platform):
        await populate(client, platform, tmp_path / "models")
    before = snapshot(source.database.url)
    empty = [name for name, found in before.items() if not found]
    assert empty == [], f"the test data should fill every table: {empty}"

    backups = f"file://{tmp_path}/offsite"
    made = cli(
        ["backup", "--to", backups],
        {"MLPLATFORM_DATABASE__URL": source.database.url, "MLPLATFORM_STORAGE__URL": source.storage.url},
        tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "prediction_logs" in made.stdout and "add --with-logs" in made.stdout  # the summary
    where = next(line.split()[-1] for line in made.stdout.splitlines() if line.startswith("restore with:"))
    listed = cli(
        ["backup", "list", "--at", backups], {"MLPLATFORM_DATABASE__URL": source.database.url}, tmp_path
    )
    assert listed.returncode == 0 and "complete" in listed.stdout, listed.stderr

    restored = cli(["restore", where], {"MLPLATFORM_DATABASE__URL": postgres_url}, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "created at schema revision" in restored.stdout
    kept = [name for name in ALL_TABLES if name not in LOG_TABLES]
    assert snapshot(postgres_url, kept) == {name: before[name] for name in kept}
    assert all(not found for name, found in snapshot(postgres_url, list(LOG_TABLES)).items())

    # The restored database serves: the artifacts were in storage all along, and new rows do not collide.
    target = settings_for(
        tmp_path / "target", database={"url": postgres_url}, storage={"url": source.storage.url}
    )
    async with running(target) as (client, _):
        assert await ok(
            client.post("/api/ml/predict", json={"model": "clf@champion", "features": [0.1] * len(FEATURES)})
        )
        await ok(client.put("/api/ml/models/clf/aliases/fresh", json={"version": 2}))
        await ok(client.put("/api/ml/models/houses/aliases/fresh", json={"version": 1}))
        history = await ok(client.get("/api/ml/models/clf/history"))
        assert history["items"][0]["alias"] == "fresh"
        jobs = await ok(client.get("/api/ml/models/houses/training-history"))
        assert jobs["items"][0]["state"] == "succeeded"


@pytest.fixture
def target_url(postgres_dsn: str) -> Iterator[str]:
    """A second fresh schema, as `postgres_url` makes one, for the restore target."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
    base = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}?options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]


async def test_postgresql_to_postgresql_with_logs_through_s3(
    postgres_url: str,
    target_url: str,
    redis_url: str,
    s3_url: str,
    s3_credentials: dict[str, str],
    tmp_path: Path,
) -> None:
    await migrate(postgres_url)
    production = {
        "database": {"url": postgres_url},
        "cache": {"url": redis_url, "timeout-ms": 500},
        "storage": {"url": s3_url, **s3_credentials},
    }
    source = settings_for(tmp_path / "source", ml=QUIET, **production)
    async with running(source) as (client, platform):
        await populate(client, platform, tmp_path / "models")
    before = snapshot(postgres_url)
    assert [name for name, found in before.items() if not found] == []

    backups = BackupService(database=source.database, storage=source.storage, settings=source.backup)
    location = backups.location()  # the configured storage (SeaweedFS S3) under backups/
    manifest, _ = await backups.create(location=location, with_logs=True)
    assert (
        manifest.with_logs and manifest.skipped == [] and {t.name for t in manifest.tables} == set(ALL_TABLES)
    )
    assert {t.name: t.rows for t in manifest.tables} == {name: len(found) for name, found in before.items()}
    assert [e.id for e in await location.entries()] == [manifest.id]

    restorer = BackupService(
        database=DatabaseSettings(url=target_url), storage=source.storage, settings=source.backup
    )
    restored = await restorer.restore(restorer.folder(manifest.id))
    assert restored.created_schema
    assert snapshot(target_url) == before
    await backups.close()
    await restorer.close()


async def small(tmp_path: Path) -> Settings:
    """A stopped embedded instance's settings, its database holding users, API keys and a dataset."""
    settings = settings_for(tmp_path / "small", ml=QUIET)
    async with running(settings) as (client, _):
        for role in ("viewer", "predictor"):
            await ok(
                client.post("/api/admin/api-keys", json={"name": role, "role": role, "owner": role}), 201
            )
        content, _ = table(30)
        await ok(client.post("/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": "d"}), 201)
    return settings


def rewrite(folder: Path, name: str, lines: list[str]) -> None:
    """Replace a table's file and make the manifest vouch for the new one (a backup whose checksums hold)."""
    data = gzip.compress("".join(lines).encode())
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / MANIFEST).read_text())
    for entry in manifest["tables"]:
        if entry["file"] == name:
            entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), rows=len(lines))
    (folder / MANIFEST).write_text(json.dumps(manifest))


def damaged(good: Path, case: str) -> Path:
    folder = good.parent / f"{case}-{good.name}"
    shutil.copytree(good, folder)
    users, keys = folder / "users.jsonl.gz", folder / "api_keys.jsonl.gz"
    if case == "corrupt":
        data = bytearray(users.read_bytes())
        data[len(data) // 2] ^= 0xFF
        users.write_bytes(bytes(data))
    elif case == "partial":
        keys.unlink()
    elif case == "no-manifest":
        (folder / MANIFEST).unlink()
    elif case == "bad-manifest":
        (folder / MANIFEST).write_text((folder / MANIFEST).read_text()[:100])
    elif case == "bad-row":  # checksums hold; the last table's last row does not decode, after others loaded
        rewrite(folder, keys.name, [*gzip.decompress(keys.read_bytes()).decode().splitlines(True), '["x"]\n'])
    return folder


async def test_a_corrupt_or_partial_backup_is_refused_and_the_target_stays_empty(
    tmp_path: Path, database_url: str
) -> None:
    source = await small(tmp_path)
    maker = BackupService(database=source.database, storage=source.storage, settings=source.backup)
    manifest, _ = await maker.create(location=maker.location(f"file://{tmp_path}/b"), with_logs=False)
    good = tmp_path / "b" / manifest.id
    restorer = service(database_url)
    cases = {
        "corrupt": "users.jsonl.gz does not match the manifest .* the backup is corrupt",
        "partial": "api_keys.jsonl.gz is missing: the backup is partial",
        "no-manifest": "no manifest.json: this backup is incomplete",
        "bad-manifest": "the manifest is not valid",
        "bad-row": "api_keys.jsonl.gz line 3: expected a list of 11 values",
    }
    for case, problem in cases.items():
        with pytest.raises(BackupError, match=problem):
            await restorer.restore(restorer.folder(f"file://{damaged(good, case)}"))
        assert table_names(database_url) == set(), case  # not even the schema: it was one transaction
    await restorer.restore(restorer.folder(f"file://{good}"))
    assert snapshot(database_url) == snapshot(source.database.url)


async def test_a_database_with_rows_or_at_another_revision_is_refused_as_it_is(
    tmp_path: Path, database_url: str
) -> None:
    source = await small(tmp_path)
    maker = BackupService(database=source.database, storage=source.storage, settings=source.backup)
    manifest, _ = await maker.create(location=maker.location(f"file://{tmp_path}/b"), with_logs=False)
    backup = f"file://{tmp_path}/b/{manifest.id}"
    restorer = service(database_url)

    await asyncio.to_thread(db.upgrade, DatabaseSettings(url=database_url), "0013")
    head = manifest.revision  # this build's newest
    with pytest.raises(BackupError, match=f"at schema revision 0013, the backup at {head}"):
        await restorer.restore(restorer.folder(backup))
    assert db.current_revision(DatabaseSettings(url=database_url)) == "0013"

    await asyncio.to_thread(db.upgrade, DatabaseSettings(url=database_url))
    engine = create_engine(db.sync_url(DatabaseSettings(url=database_url)))
    with engine.begin() as conn:
        conn.execute(metadata.tables["users"].insert().values(id=new_id(), name="kept", created_at=utcnow()))
    engine.dispose()
    with pytest.raises(BackupError, match=r"not empty \(rows in users\)"):
        await restorer.restore(restorer.folder(backup))
    assert {name: n for name, n in counts(database_url).items() if n} == {"users": 1}


class WriteMidway(Reporter):
    """Commits a user on another connection once the export has begun: the backup must not see it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def phase(self, description: str, total: float | None = None) -> None:
        if description == "exporting tables":
            engine = create_engine(db.sync_url(DatabaseSettings(url=self.url)))
            with engine.begin() as conn:
                conn.execute(
                    metadata.tables["users"].insert().values(id=new_id(), name="late", created_at=utcnow())
                )
            engine.dispose()


async def test_the_export_is_one_snapshot(tmp_path: Path, database_url: str) -> None:
    await migrate(database_url)
    if database_url.startswith("sqlite"):
        sqlite3.connect(database_url.split("///", 1)[1]).execute(
            "PRAGMA journal_mode=WAL"
        ).close()  # as served
    backups = service(database_url, f"file://{tmp_path}/artifacts")
    manifest, _ = await backups.create(
        location=backups.location(), with_logs=True, reporter=WriteMidway(database_url)
    )
    assert {t.name: t.rows for t in manifest.tables}["users"] == 0
    assert counts(database_url)["users"] == 1


async def test_retention_deletes_the_oldest_and_abandoned_backups(tmp_path: Path) -> None:
    source = await small(tmp_path)
    backups = BackupService(database=source.database, storage=source.storage, settings=source.backup)
    location = backups.location()
    made = [(await backups.create(location=location, with_logs=False))[0].id for _ in range(3)]
    root = Path(source.storage.url.removeprefix("file://")) / "backups"
    abandoned, running_now = root / "20200101T000000.000Z-0badf00d", root / "20991231T000000.000Z-00c0ffee"
    for folder in (abandoned, running_now):
        folder.mkdir()
        (folder / "users.jsonl.gz").write_bytes(b"...")
    long_ago = (utcnow() - timedelta(days=2)).timestamp()
    os.utime(abandoned / "users.jsonl.gz", (long_ago, long_ago))

    assert await backups.prune(location, keep=2) == sorted([abandoned.name, made[0]])
    entries = await location.entries()
    assert [(e.id, e.complete) for e in entries] == [
        (made[1], True),
        (made[2], True),
        (running_now.name, False),
    ]


async def test_scheduled_backups_keep_the_newest(make_app: AppFactory, tmp_path: Path) -> None:
    schedule = {"schedule-seconds": 1, "retention": 2, "location": f"file://{tmp_path}/scheduled"}
    _, platform = await make_app(ml=QUIET, backup=schedule)
    location = platform.backups.service.location()
    async with asyncio.timeout(60):
        while not (entries := await location.entries()):
            await asyncio.sleep(0.1)
        first = entries[0].id
        while first in {e.id for e in entries} or len(entries) < 2:  # the oldest went once two newer came
            await asyncio.sleep(0.1)
            entries = await location.entries()
        while counter_totals(platform.backups.runs).get("ok", 0) < 3:  # counted once its lease is released
            await asyncio.sleep(0.05)
    assert all(e.complete for e in entries)


async def test_one_instance_of_two_runs_a_scheduled_backup(
    make_app: AppFactory, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    schedule = {"schedule-seconds": 3600, "location": f"file://{tmp_path}/scheduled"}
    (_, one), (_, two) = await two_instances(make_app, postgres_url, redis_url, ml=QUIET, backup=schedule)
    location = one.backups.service.location()

    def runs() -> list[float]:
        return sorted(counter_totals(p.backups.runs).get("ok", 0.0) for p in (one, two))

    async with asyncio.timeout(60):
        while runs() == [0.0, 0.0]:
            await asyncio.sleep(0.1)
    assert await asyncio.gather(one.backups.tick(), two.backups.tick()) == [None, None]  # not due for an hour
    assert runs() == [0.0, 1.0]
    assert [e.complete for e in await location.entries()] == [True]
