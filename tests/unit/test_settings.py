"""Settings: defaults, YAML profiles, ${VAR} interpolation, *_FILE secrets, environment overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplatform import config
from mlplatform.config import REDACTED, ConfigError, default_config_dir, load_settings, redact_url, redacted
from mlplatform.units import parse_size

REPO_CONFIG = Path(__file__).parents[2] / "config"

PROD_ENV = {
    "MLPLATFORM_PROFILE": "prod",
    "DB_HOST": "db.internal",
    "DB_NAME": "mlplatform",
    "DB_USER": "ml",
    "DB_PASSWORD": "p@ss:w/rd",
    "REDIS_HOST": "redis.internal",
    "REDIS_PORT": "6380",
    "REDIS_PASSWORD": "redis-secret",
    "ML_MODELS_BUCKET": "ml-models-prod",
    "AWS_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIA123",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "S3_ENDPOINT": "http://minio:9000",
}


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_defaults_are_embedded_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(environ={}, config_dir=tmp_path)
    assert settings.database.url.startswith("sqlite+aiosqlite://")
    assert settings.cache.url == "memory://"
    assert settings.storage.url.startswith("file://")
    assert settings.server.port == 8080
    assert settings.ml.models.cache_size == 100
    assert settings.ml.predictions.cache_min_confidence == 0.9
    assert settings.ml.models.allow_pickle is False
    assert settings.embedded


def test_config_folder_is_the_variable_then_local_then_the_installed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = tmp_path / "site-packages" / "mlplatform" / "bundled_config"
    write(bundled, "application-prod.yml", "server:\n  port: 9999\n")
    monkeypatch.setattr(config, "BUNDLED_CONFIG", bundled)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    assert default_config_dir({}) == bundled  # no ./config here: the copy the wheel carries
    assert load_settings(environ={"MLPLATFORM_PROFILE": "prod", **PROD_ENV}).server.port == 9999
    (workdir / "config").mkdir()
    assert default_config_dir({}) == Path("config")
    assert default_config_dir({"MLPLATFORM_CONFIG_DIR": "/etc/ml"}) == Path("/etc/ml")


def test_repository_defaults_file_matches_built_in_defaults(tmp_path: Path) -> None:
    assert load_settings(environ={}, config_dir=REPO_CONFIG) == load_settings(environ={}, config_dir=tmp_path)


def test_prod_profile_reads_the_seed_variables() -> None:
    settings = load_settings(environ=PROD_ENV, config_dir=REPO_CONFIG)
    assert settings.profile == "prod"
    assert settings.database.url == "postgresql+psycopg://db.internal:5432/mlplatform"
    assert settings.database.username == "ml"
    assert settings.database.password is not None
    assert settings.database.password.get_secret_value() == "p@ss:w/rd"
    assert settings.cache.url == "redis://redis.internal:6380/0"
    assert settings.storage.url == "s3://ml-models-prod?region=eu-west-1&endpoint=http://minio:9000"
    assert settings.server.host == "0.0.0.0"
    assert settings.logging.format == "json"
    assert settings.management.tags.environment == "production"


def test_spring_profiles_active_is_honoured() -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != "MLPLATFORM_PROFILE"}
    env["SPRING_PROFILES_ACTIVE"] = "prod"
    assert load_settings(environ=env, config_dir=REPO_CONFIG).profile == "prod"


def test_a_missing_variable_names_the_key_and_the_variable() -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != "DB_HOST"}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env, config_dir=REPO_CONFIG)
    message = str(caught.value)
    assert "database.url" in message and "DB_HOST" in message
    assert "\n" not in message


def test_file_variables_hold_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("from-a-file\n")
    env = {k: v for k, v in PROD_ENV.items() if k != "DB_PASSWORD"}
    env["DB_PASSWORD_FILE"] = str(secret)
    settings = load_settings(environ=env, config_dir=REPO_CONFIG)
    assert settings.database.password is not None
    assert settings.database.password.get_secret_value() == "from-a-file"


def test_mlplatform_variables_override_yaml_and_their_file_form(tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text("mlp_bootstrap_key_from_file")
    write(tmp_path / "config", "application.yml", "server:\n  port: 7000\n")
    env = {
        "MLPLATFORM_SERVER__PORT": "9000",
        "MLPLATFORM_ML__PREDICTIONS__CACHE_TTL_SECONDS": "60",
        "MLPLATFORM_ML__MODELS__PRELOAD": "fraud-detector, churn@production",
        "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY_FILE": str(key_file),
        "MLPLATFORM_LOGGING__LEVEL__MLPLATFORM.REGISTRY": "debug",
    }
    settings = load_settings(environ=env, config_dir=tmp_path / "config")
    assert settings.server.port == 9000
    assert settings.ml.predictions.cache_ttl_seconds == 60
    assert settings.ml.models.preload == ["fraud-detector", "churn@production"]
    key = settings.security.api_keys.bootstrap_admin_key
    assert key is not None and key.get_secret_value() == "mlp_bootstrap_key_from_file"
    assert settings.logging.level["mlplatform.registry"] == "DEBUG"


def test_defaults_and_placeholders_with_default_values(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "cache:\n  url: redis://${RH:localhost}:${RP:6379}/0\n")
    assert load_settings(environ={}, config_dir=tmp_path).cache.url == "redis://localhost:6379/0"
    assert load_settings(environ={"RH": "r"}, config_dir=tmp_path).cache.url == "redis://r:6379/0"


@pytest.mark.parametrize(
    ("env", "key", "problem"),
    [
        ({"MLPLATFORM_SERVER__PORT": "eighty"}, "server.port", "integer"),
        ({"MLPLATFORM_SERVER__PORT": "70000"}, "server.port", "65535"),
        ({"MLPLATFORM_DATABASE__URL": "mysql://x"}, "database.url", "postgresql+psycopg"),
        ({"MLPLATFORM_CACHE__URL": "memcached://x"}, "cache.url", "redis://"),
        ({"MLPLATFORM_ML__PREDICTIONS__CACHE_MIN_CONFIDENCE": "2"}, "cache-min-confidence", "1"),
        ({"MLPLATFORM_LOGGING__FORMAT": "xml"}, "logging.format", "json"),
        ({"MLPLATFORM_SERVER__PROT": "1"}, "server.prot", "not a known key"),
        ({"MLPLATFORM_SERVER__MAX_BODY_SIZE": "lots"}, "max-body-size", "size"),
        ({"MLPLATFORM_LOGGING__FILE__MAX_SIZE": "0"}, "logging.file.max-size", "1024"),
        ({"MLPLATFORM_LOGGING__FILE__MAX_HISTORY": "0"}, "logging.file.max-history", "1"),
    ],
)
def test_bad_values_name_the_key_and_the_problem(
    tmp_path: Path, env: dict[str, str], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env, config_dir=tmp_path)
    assert key in str(caught.value)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_named_profile_needs_its_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="application-staging.yml"):
        load_settings(environ={"MLPLATFORM_PROFILE": "staging"}, config_dir=tmp_path)


def test_invalid_yaml_is_reported_with_the_file(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "server: [unclosed\n")
    with pytest.raises(ConfigError, match="application.yml"):
        load_settings(environ={}, config_dir=tmp_path)


def test_redaction_hides_every_secret() -> None:
    admin_key = "mlp_supersecretadminkey_0123456789"
    env = dict(PROD_ENV, MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY=admin_key)
    env["MLPLATFORM_CACHE__URL"] = "redis://:inline-pass@redis:6379/0"
    shown = str(redacted(load_settings(environ=env, config_dir=REPO_CONFIG)))
    for secret in (
        "p@ss:w/rd",
        "redis-secret",
        "aws-secret",
        "AKIA123",
        "mlp_supersecretadminkey_0123456789",
        "inline-pass",
    ):
        assert secret not in shown
    assert REDACTED in shown


def test_redact_url_masks_passwords_and_secret_query_values() -> None:
    assert redact_url("postgresql://u:pw@h/db") == f"postgresql://u:{REDACTED}@h/db"
    assert (
        redact_url("s3://b?region=x&secret_access_key=abc") == f"s3://b?region=x&secret_access_key={REDACTED}"
    )
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("text", "size"), [("512", 512), ("64KB", 65536), ("100MB", 100 * 2**20), ("1GiB", 2**30)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_several_workers_need_a_shared_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MLPLATFORM_SERVER__WORKERS": "2"}, config_dir=tmp_path)
    assert "server.workers: 2 worker processes need a shared cache" in str(caught.value)
    shared = {"MLPLATFORM_SERVER__WORKERS": "2", "MLPLATFORM_CACHE__URL": "redis://127.0.0.1:6379"}
    assert load_settings(environ=shared, config_dir=tmp_path).server.workers == 2


def test_jobs_scheduler_is_local_or_a_dask_address() -> None:
    from pydantic import ValidationError

    from mlplatform.settings import JobsSettings

    assert JobsSettings().scheduler == "local"
    assert JobsSettings(scheduler="tls://dask.example:8786").scheduler == "tls://dask.example:8786"
    with pytest.raises(ValidationError, match="tcp://HOST:PORT"):
        JobsSettings(scheduler="http://dask:8786")


def test_jobs_recovery_settings_come_from_the_environment_and_a_lease_outlives_its_heartbeats(
    tmp_path: Path,
) -> None:
    from pydantic import ValidationError

    from mlplatform.settings import JobsSettings

    environ = {"MLPLATFORM_JOBS__CHECKPOINT_EVERY": "50", "MLPLATFORM_JOBS__MAX_ATTEMPTS": "5"}
    jobs = load_settings(environ=environ, config_dir=tmp_path).jobs
    assert (jobs.checkpoint_every, jobs.max_attempts, jobs.lease_seconds) == (50, 5, 30.0)
    with pytest.raises(ValidationError, match="lease-seconds must be at least twice heartbeat-seconds"):
        JobsSettings(lease_seconds=3, heartbeat_seconds=2)
    with pytest.raises(ValidationError):
        JobsSettings(max_attempts=0)


@pytest.mark.parametrize(
    ("scheduler", "allowed"),
    [
        ("tcp://dask-scheduler:8786", False),
        ("tcp://10.0.0.5:8786", False),
        ("tcp://127.0.0.1:8786", True),
        ("tcp://localhost:8786", True),
        ("tcp://[::1]:8786", True),
        ("tls://dask-scheduler:8786", True),
        ("local", True),
    ],
)
def test_outside_development_a_plain_scheduler_off_this_machine_is_refused(
    tmp_path: Path, scheduler: str, allowed: bool
) -> None:
    (tmp_path / "application-staging.yml").write_text("{}\n")
    environ = {"MLPLATFORM_PROFILE": "staging", "MLPLATFORM_JOBS__SCHEDULER": scheduler}
    if allowed:
        assert load_settings(environ=environ, config_dir=tmp_path).jobs.scheduler == scheduler
    else:
        with pytest.raises(ConfigError, match="jobs.scheduler: .* plain tcp:// off this machine"):
            load_settings(environ=environ, config_dir=tmp_path)
        insecure = {**environ, "MLPLATFORM_JOBS__ALLOW_INSECURE": "true"}
        assert load_settings(environ=insecure, config_dir=tmp_path).jobs.allow_insecure
    # on a developer's machine (the default profile) any address is taken
    default = {"MLPLATFORM_JOBS__SCHEDULER": scheduler}
    assert load_settings(environ=default, config_dir=tmp_path).jobs.scheduler == scheduler
