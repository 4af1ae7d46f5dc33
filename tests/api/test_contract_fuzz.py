"""Every operation of the OpenAPI document, fuzzed in-process by schemathesis: no 5xx, no undeclared status,
every response valid against its schema and of a declared media type.

The app is `create_app` on the embedded backends (SQLite, memory cache, files), and again on PostgreSQL,
with one registered model and one dataset, which half the cases name (`cases`) so that routes get past their
404. Deterministic (derandomized, no example database) and bounded: `EXAMPLES` per operation and generation
mode, about 1,900 requests in 20 s per database. schemathesis' own pytest integration (`from_fixture`) is
not used: it writes `node._nodeid`, which pytest 9.2 no longer has; this drives the same strategies with
`hypothesis.given`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mlplatform import db
from mlplatform.app import create_app
from mlplatform.platform import Platform
from mlplatform.settings import DatabaseSettings
from tests.api.conftest import ADMIN_KEY, settings_for
from tests.api.models import FEATURES, reference

MODEL = "fuzzed"
DATASET = "fuzzed-rows"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
EXAMPLES = 25


def _started(platform: Platform, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not platform.lifecycle.started:
        assert time.monotonic() < deadline, platform.lifecycle.startup_error
        time.sleep(0.02)


def _seed(client: asgi.ASGIClient, folder: Path) -> dict[str, Any]:
    """One model (v1 in production) and one dataset, through the API itself; their path parameters."""
    ref = reference("sklearn-forest-skops", folder)
    files = {"file": (ref.path.name, ref.path.read_bytes(), "application/octet-stream")}
    response = client.post(
        f"/api/ml/models/{MODEL}/versions", files=files, data={"metadata": json.dumps(ref.metadata)}
    )
    assert response.status_code == 201, response.text
    response = client.post(f"/api/ml/models/{MODEL}/versions/1/stage", json={"stage": "production"})
    assert response.status_code == 200, response.text
    rows = ",".join(FEATURES) + "\n" + "\n".join(",".join(map(str, row)) for row in ref.X[:20].tolist())
    files = {"file": ("rows.csv", rows.encode(), "text/csv")}
    response = client.post("/api/ml/datasets", files=files, data={"name": DATASET})
    assert response.status_code == 201, response.text
    return {"name": MODEL, "model": MODEL, "version": 1, "dataset_id": response.json()["id"]}


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite, or a fresh schema in PostgreSQL (which refuses what SQLite takes: NUL in text, past int32)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db')}/fuzz.db"
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema = f"fuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1) + f"?options=-csearch_path%3D{schema}"
    db.upgrade(DatabaseSettings(url=url))
    yield url
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def fuzzed_app(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("fuzz")
    overrides = {"database": {"url": database}, "security": {"rate-limit": {"default": "100000/second"}}}
    app = create_app(settings_for(folder, **overrides))
    with asgi.get_client(app) as client:  # starts the lifespan, kept until `shutdown_lifespans`
        client.headers["X-API-Key"] = ADMIN_KEY
        _started(app.state.platform)
        real = _seed(client, folder / "refs")
    yield app, real
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: tuple[FastAPI, dict[str, Any]]) -> Any:
    app, _ = fuzzed_app
    config = schemathesis.Config.from_dict({"headers": {"X-API-Key": ADMIN_KEY}})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def cases(operation: Any, mode: GenerationMode, real: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Generated cases, and as many again naming the seeded model and dataset (in the path, else in the
    body); deletes excepted: they would take the data away from every later operation."""
    generated = operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    if operation.method.upper() == "DELETE":
        return generated
    known = {name: value for name, value in real.items() if name in names}
    if known:
        return st.one_of(generated, operation.as_strategy(generation_mode=mode, path_parameters=known))
    return st.one_of(generated, generated.map(lambda case: naming(case, real["model"])))


def naming(case: schemathesis.Case, model: str) -> schemathesis.Case:
    """The case with the seeded model in its body's `model` field, if it has one (the predict routes)."""
    if isinstance(case.body, dict) and "model" in case.body:
        case.body = {**case.body, "model": model}
    return case


@pytest.mark.parametrize(
    "database",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True,
    scope="module",
)
def test_every_operation_keeps_its_contract(
    api_schema: Any, fuzzed_app: tuple[FastAPI, dict[str, Any]], subtests: pytest.Subtests
) -> None:
    _, real = fuzzed_app
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 40
    statuses: Counter[int] = Counter()
    for operation in operations:
        for mode in GenerationMode:
            if mode is GenerationMode.NEGATIVE and not (operation.body or any(operation.iter_parameters())):
                continue  # nothing to make invalid
            with subtests.test(operation=operation.label, mode=mode.value):
                fuzz(cases(operation, mode, real), statuses)
    print(f"{len(operations)} operations, {statuses.total()} requests, by status: {sorted(statuses.items())}")
    assert statuses[200] and statuses[404] and statuses[422]  # past the 404s, and refused bad input


def fuzz(strategy: st.SearchStrategy[Any], statuses: Counter[int]) -> None:
    @hypothesis.settings(
        derandomize=True,
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        statuses[case.call_and_validate(checks=CHECKS).status_code] += 1

    run()
