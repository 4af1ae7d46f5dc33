"""`mlplatform serve` as an operator runs it: embedded defaults, the prod profile, bad config, SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import ServerProcess, run_cli
from tests.services import S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, SeaweedFS, free_port

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-bootstrap-admin-key-0123456789"
# uvicorn finishes in-flight requests, runs shutdown, then re-raises SIGTERM so the exit status tells why.
STOPPED_BY_SIGTERM = {0, -signal.SIGTERM}


def test_serves_on_embedded_defaults_with_no_set_up(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    server.wait_for("/actuator/health/readiness")
    health = server.get("/actuator/health").json()
    assert health["status"] == "UP"
    assert {name: c["status"] for name, c in health["components"].items()} == {
        "db": "UP",
        "cache": "UP",
        "storage": "UP",
        "jobs": "UP",  # the embedded Dask cluster starts with the first training job
    }
    assert (tmp_path / "data" / "mlplatform.db").exists()
    # The first start on a fresh database prints an admin key once, and it works.
    [key] = set(re.findall(r"export MLPLATFORM_API_KEY=(mlp_[\w-]{43})", server.log.read_text()))
    assert server.get("/api/ml/models", headers={"X-API-Key": key}).status_code == 200
    assert server.terminate() in STOPPED_BY_SIGTERM
    assert "stopped" in server.output()


@pytest.fixture
def prod_database(postgres_dsn: str) -> Iterator[str]:
    name = f"mlp_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def prod_environment(database: str, seaweedfs: SeaweedFS, log_dir: Path) -> dict[str, str]:
    return {
        "MLPLATFORM_PROFILE": "prod",
        "DB_HOST": "127.0.0.1",
        "DB_NAME": database,
        "DB_USER": "postgres",
        "DB_PASSWORD": "unused-with-trust-auth",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_PASSWORD": "",
        "ML_MODELS_BUCKET": S3_BUCKET,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "S3_ENDPOINT": seaweedfs.endpoint,
        "MLPLATFORM_LOGGING__FILE__NAME": str(log_dir / "application.log"),
        "MLPLATFORM_SERVER__HOST": "127.0.0.1",
        "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }


def test_prod_profile_on_postgres_redis_and_s3(
    start_server: StartServer,
    prod_database: str,
    seaweedfs: SeaweedFS,
    redis_base_url: str,
    tmp_path: Path,
) -> None:
    env = prod_environment(prod_database, seaweedfs, tmp_path / "logs")
    server = start_server(env)
    server.wait_for("/actuator/health/readiness", status=503)
    deadline = time.monotonic() + 30
    while "mlplatform db upgrade" not in (reason := server.get("/actuator/health/readiness").text):
        assert time.monotonic() < deadline, reason  # prod never migrates by itself: readiness says so
        time.sleep(0.2)
    server.terminate()

    upgraded = run_cli(["db", "upgrade"], env, tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr

    server = start_server(env)
    server.wait_for("/actuator/health/readiness")
    health = server.get("/actuator/health").json()
    assert health["status"] == "UP", health
    assert health["components"]["db"]["details"]["backend"] == "postgresql"
    assert health["components"]["cache"]["details"]["backend"].startswith("redis://127.0.0.1:6379")
    assert health["components"]["storage"]["details"]["backend"].startswith(f"s3://{S3_BUCKET}")
    info = server.get("/actuator/info", headers={"X-API-Key": ADMIN_KEY}).json()
    assert info["app"]["profile"] == "prod"
    assert info["backends"] == {"database": "postgresql", "cache": "redis", "storage": "s3"}
    assert server.terminate() in STOPPED_BY_SIGTERM
    lines = (tmp_path / "logs" / "application.log").read_text().splitlines()
    assert lines and all(json.loads(line)["timestamp"] for line in lines)


def test_a_bad_value_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = run_cli(["serve"], {"MLPLATFORM_SERVER__PORT": "eighty"}, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "server.port" in lines[0] and "integer" in lines[0]


def test_prod_profile_without_its_variables_names_the_first_missing_one(tmp_path: Path) -> None:
    result = run_cli(["config", "show"], {"MLPLATFORM_PROFILE": "prod"}, tmp_path)
    assert result.returncode == 2
    assert "DB_HOST" in result.stderr


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    env = {
        "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": "mlp_do_not_print_me_0123456789abcdef",
        "MLPLATFORM_DATABASE__URL": "postgresql+psycopg://ml:hunter2@db:5432/ml",
    }
    result = run_cli(["config", "show"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mlp_do_not_print_me_0123456789abcdef" not in result.stdout and "hunter2" not in result.stdout
    assert "bootstrap-admin-key: '******'" in result.stdout
    assert "postgresql+psycopg://ml:******@db:5432/ml" in result.stdout


def test_doctor_checks_libraries_and_backends(tmp_path: Path) -> None:
    result = run_cli(["doctor"], {"COLUMNS": "200"}, tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "sklearn",
        "xgboost",
        "lightgbm",
        "onnxruntime",
        "skops",
        "database",
        "cache",
        "storage",
        "schema",
    ):
        assert name in result.stdout


def test_doctor_says_what_to_do_when_a_backend_is_down(tmp_path: Path) -> None:
    env = {"MLPLATFORM_CACHE__URL": f"redis://127.0.0.1:{free_port()}/0", "COLUMNS": "250"}
    result = run_cli(["doctor"], env, tmp_path, timeout=300)
    assert result.returncode == 1
    assert "FAIL" in result.stdout
    assert "cache.url" in result.stdout
