"""Typed settings: defaults, YAML profiles, `${VAR}` interpolation and environment overrides."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mlplatform.units import check_rate, parse_size


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class Section(BaseModel):
    """Base of every settings block: kebab-case keys in YAML, unknown keys refused."""

    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, extra="forbid", frozen=True)


class CompressionSettings(Section):
    enabled: bool = True
    min_response_size: int = Field(1024, ge=0)


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    max_connections: int = Field(10000, ge=1)
    accept_count: int = Field(100, ge=1)
    max_body_size: int = Field(64 * 1024 * 1024, ge=1024)
    graceful_shutdown_seconds: int = Field(30, ge=0)
    compression: CompressionSettings = CompressionSettings()

    @field_validator("max_body_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value


class PoolSettings(Section):
    maximum_pool_size: int = Field(20, ge=1)
    minimum_idle: int = Field(5, ge=0)
    connection_timeout: int = Field(30000, ge=1, description="milliseconds")
    idle_timeout: int = Field(600000, ge=0, description="milliseconds")
    max_lifetime: int = Field(1800000, ge=0, description="milliseconds")


class DatabaseSettings(Section):
    url: str = "sqlite+aiosqlite:///./data/mlplatform.db"
    username: str | None = None
    password: SecretStr | None = None
    pool: PoolSettings = PoolSettings()

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not re.match(r"^(sqlite\+aiosqlite|postgresql\+psycopg)://", value):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+psycopg://")
        return value


class CacheSettings(Section):
    url: str = "memory://"
    password: SecretStr | None = None
    timeout_ms: int = Field(50, ge=1, le=60000)
    breaker_failures: int = Field(3, ge=1)
    breaker_reset_seconds: float = Field(2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not re.match(r"^(memory|redis|rediss)://", value):
            raise ValueError("must start with memory://, redis:// or rediss://")
        return value


def _check_storage_url(value: str) -> str:
    if not re.match(r"^(file|s3)://.+", value):
        raise ValueError("must be file://PATH or s3://BUCKET[?endpoint=...&region=...]")
    return value


class StorageSettings(Section):
    url: str = "file://./data/artifacts"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        return _check_storage_url(value)


class BackupSettings(Section):
    """Scheduled logical backups of the database (`mlplatform backup` runs one by hand)."""

    schedule_seconds: int = Field(0, ge=0, description="seconds between scheduled backups (0: none)")
    retention: int = Field(
        7, ge=0, description="complete backups kept at the location after each scheduled one (0: all)"
    )
    with_logs: bool = Field(False, description="scheduled backups include prediction logs")
    location: str | None = Field(
        None, description="file://PATH or s3://BUCKET[/PREFIX]?...; default: storage.url under backups/"
    )
    timeout_seconds: int = Field(3600, ge=1, description="a scheduled backup running longer is cut")

    @field_validator("location")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        return None if value is None else _check_storage_url(value)


class JobsSettings(Section):
    scheduler: str = Field("local", description="local (an embedded LocalCluster) or tcp://|tls://HOST:PORT")
    workers: int = Field(1, ge=1, le=64, description="worker processes of the embedded cluster")
    allow_insecure: bool = Field(
        False, description="outside development, allow a plain tcp:// scheduler that is not on loopback"
    )
    checkpoint_every: int = Field(
        25, ge=0, description="boosting rounds between checkpoints in storage (0: no checkpoints)"
    )
    max_attempts: int = Field(3, ge=1, le=100, description="runs of a job before a lost worker fails it")
    lease_seconds: float = Field(
        30.0, ge=2, description="a job whose instance has not renewed its lease this long is taken over"
    )
    heartbeat_seconds: float = Field(
        2.0, gt=0, description="how often the instance following a job renews its lease and heartbeat"
    )
    reconcile_seconds: float = Field(
        5.0, gt=0, description="how often every instance looks for jobs whose instance or worker died"
    )
    distributed_threshold_rows: int = Field(
        5_000_000,
        ge=1,
        description="XGBoost and LightGBM jobs on a Parquet dataset past this many rows train across every "
        "worker (xgboost.dask / lightgbm.dask), unless the job says `distributed`",
    )

    @property
    def exposed(self) -> bool:
        """A plain-text scheduler address off this machine: whoever reaches it can run code on the cluster."""
        if not self.scheduler.startswith("tcp://"):
            return False
        host = self.scheduler.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]").lower()
        return not (host in ("localhost", "::1") or host.startswith("127."))

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> JobsSettings:
        if self.lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("lease-seconds must be at least twice heartbeat-seconds")
        return self

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str) -> str:
        if value != "local" and not re.fullmatch(r"(tcp|tls)://[^\s/]+:\d+", value):
            raise ValueError("must be local or tcp://HOST:PORT (or tls://HOST:PORT)")
        return value


class ModelsSettings(Section):
    cache_size: int = Field(100, ge=1)
    cache_ttl: int = Field(3600, ge=1)
    preload: list[str] = []
    allow_pickle: bool = False
    registry_refresh_seconds: float = Field(10.0, gt=0)
    local_cache_dir: str = "./data/model-cache"
    orphan_min_age_seconds: int = Field(3600, ge=0)

    @field_validator("preload", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class FallbackSettings(Section):
    """What to answer for a model that is unknown or too slow: a constant, or another model's prediction."""

    constant: Any = None
    model: str | None = None

    @model_validator(mode="after")
    def _one(self) -> FallbackSettings:
        if (self.constant is None) == (self.model is None):
            raise ValueError("give exactly one of constant or model")
        return self


class PredictionsSettings(Section):
    batch_size: int = Field(1000, ge=1)
    timeout_ms: int = Field(5000, ge=1)
    enable_cache: bool = True
    cache_ttl_seconds: int = Field(300, ge=1)
    cache_min_confidence: float = Field(0.9, ge=0, le=1)
    log_sample_rate: float = Field(1.0, ge=0, le=1)
    log_queue_size: int = Field(100_000, ge=1)
    shadow_queue_size: int = Field(
        1000, ge=1, description="requests waiting for a shadow version; more are dropped and counted"
    )
    fallbacks: dict[str, FallbackSettings] = {}


_WINDOW = re.compile(r"^[1-9][0-9]{0,3}[mhd]$")


def _check_window(value: str) -> str:
    if not _WINDOW.match(value):
        raise ValueError("a number and a unit, m, h or d (e.g. 1h, 24h, 7d)")
    return value


class AlertRuleSettings(Section):
    """One alert rule from configuration (kinds: `mlplatform.monitoring.alerts.rules.RULE_KINDS`)."""

    name: str = Field(min_length=1, max_length=128)
    kind: str
    threshold: float = 0.0
    window: str = "1h"
    severity: Literal["info", "warning", "critical"] = "warning"
    model: str | None = None

    _window = field_validator("window")(_check_window)


class WebhookSettings(Section):
    """A receiver of Alertmanager-format notifications. With `secret`, each body is signed:
    `X-MLPlatform-Signature: sha256=<hex HMAC-SHA256 of the body>`."""

    url: str
    headers: dict[str, str] = {}
    secret: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


class AlertSettings(Section):
    rules: list[AlertRuleSettings] = []
    webhooks: list[WebhookSettings] = []
    queue_size: int = Field(1000, ge=1, description="notifications waiting to be sent, at most")
    timeout_seconds: float = Field(5.0, gt=0, description="per delivery attempt")
    max_attempts: int = Field(6, ge=1)
    backoff_seconds: float = Field(1.0, gt=0, description="first retry delay; doubled each attempt")
    max_backoff_seconds: float = Field(60.0, gt=0)
    external_url: str | None = Field(None, description="base of generatorURL; default the server's own")


class MonitoringSettings(Section):
    enabled: bool = True
    check_interval: int = Field(300, ge=1)
    check_window: str = "24h"
    check_timeout: int = Field(600, ge=1, description="seconds a scheduled check may run before it is cut")
    drift_detection: bool = True
    alert_on_drift: bool = True
    accuracy_threshold: float = Field(0.8, ge=0, le=1)
    alerts: AlertSettings = AlertSettings()

    _window = field_validator("check_window")(_check_window)


class ExperimentsSettings(Section):
    supervise_seconds: float = Field(
        5.0, gt=0, le=3600, description="how often canaries are checked (step, roll back, promote)"
    )


class ServingStatsSettings(Section):
    """The per-minute serving counts each process saves (requests, errors, latency over time)."""

    flush_seconds: float = Field(10.0, gt=0, le=60, description="how often a process saves its counts")
    retention: str = Field("7d", description="how long saved minutes are kept (m, h or d)")

    _retention = field_validator("retention")(_check_window)


class ServingSettings(Section):
    stats: ServingStatsSettings = ServingStatsSettings()


class MlSettings(Section):
    models: ModelsSettings = ModelsSettings()
    predictions: PredictionsSettings = PredictionsSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    experiments: ExperimentsSettings = ExperimentsSettings()
    serving: ServingSettings = ServingSettings()


class ApiKeySettings(Section):
    enabled: bool = True
    bootstrap_admin_key: SecretStr | None = None
    create_first_admin_key: bool = Field(True, description="default profile only; never in prod")
    refresh_seconds: float = Field(30.0, gt=0)
    # A key the database did not know is answered 401 from memory for this long (until a key is created).
    unknown_key_ttl_seconds: float = Field(30.0, ge=0)
    # Database lookups of keys this instance does not hold, at most, whatever the flood of unknown keys.
    unknown_key_lookups_per_second: float = Field(10.0, gt=0)

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError("must be at least 24 characters (use `mlplatform keys generate`)")
        return value


class RateLimitSettings(Section):
    enabled: bool = True
    default: str = "1000/second"
    failed_auth: str = "30/minute"

    @field_validator("default", "failed_auth")
    @classmethod
    def _rate(cls, value: str) -> str:
        return check_rate(value)


class InputLimitSettings(Section):
    max_batch_rows: int = Field(10000, ge=1)
    max_features: int = Field(10000, ge=1)
    max_decompressed_size: int = Field(256 * 1024 * 1024, ge=1024)
    max_upload_rows: int = Field(10_000_000, ge=1)
    max_upload_size: int = Field(2 * 1024**3, ge=1024)

    @field_validator("max_decompressed_size", "max_upload_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value


class SecuritySettings(Section):
    api_keys: ApiKeySettings = ApiKeySettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    limits: InputLimitSettings = InputLimitSettings()


class LogFileSettings(Section):
    name: str | None = None
    max_size: int = Field(
        100 * 1024 * 1024, ge=1024, description="the file is rotated before it grows past this"
    )
    max_history: int = Field(
        30, ge=1, description="rotated files kept (name.1 the newest); older ones deleted"
    )

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value


class LoggingSettings(Section):
    level: dict[str, str] = {"root": "INFO"}
    format: Literal["console", "json"] = "console"
    file: LogFileSettings = LogFileSettings()

    @field_validator("level")
    @classmethod
    def _levels(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = {"TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "OFF"}
        for logger, level in value.items():
            if level.upper() not in allowed:
                raise ValueError(f"{logger}: {level!r} is not one of {sorted(allowed)}")
        return {k: v.upper() for k, v in value.items()}


class TagSettings(Section):
    application: str = "mlplatform"
    environment: str = "development"


class HealthSettings(Section):
    timeout_ms: int = Field(2000, ge=1)
    readiness_include: list[Literal["db", "cache", "storage"]] = ["db"]
    refresh_seconds: float = Field(
        15.0, gt=0, le=3600, description="how often every component is checked for ml_health_component_up"
    )


class ManagementSettings(Section):
    tags: TagSettings = TagSettings()
    public: list[str] = []
    health: HealthSettings = HealthSettings()

    @field_validator("public", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class UiSettings(Section):
    """The web console at /ui: its sessions (kept in the cache backend, so every instance knows them)."""

    session_idle_minutes: float = Field(
        30.0, gt=0, le=24 * 60, description="a session unused this long ends (each request extends it)"
    )
    session_max_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="a session ends this long after sign-in"
    )
    secure_cookie: bool | None = Field(
        None, description="the session cookie's Secure flag; unset: on in every profile but the default"
    )


class Settings(Section):
    """The whole configuration. Built by `mlplatform.config.load_settings`, never read at import."""

    profile: str = "default"
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    cache: CacheSettings = CacheSettings()
    storage: StorageSettings = StorageSettings()
    jobs: JobsSettings = JobsSettings()
    ml: MlSettings = MlSettings()
    security: SecuritySettings = SecuritySettings()
    logging: LoggingSettings = LoggingSettings()
    management: ManagementSettings = ManagementSettings()
    backup: BackupSettings = BackupSettings()
    ui: UiSettings = UiSettings()

    @model_validator(mode="after")
    def _shared_cache_for_workers(self) -> Settings:
        if self.server.workers > 1 and self.cache.url.startswith("memory://"):
            raise ValueError(
                f"server.workers: {self.server.workers} worker processes need a shared cache (cache.url "
                "redis://...): with memory:// each worker would keep its own rate limits and prediction "
                "cache and miss the others' API-key and registry events"
            )
        return self

    @model_validator(mode="after")
    def _no_exposed_scheduler(self) -> Settings:
        if self.jobs.exposed and not self.development and not self.jobs.allow_insecure:
            raise ValueError(
                f"jobs.scheduler: {self.jobs.scheduler} is plain tcp:// off this machine, and a Dask "
                "scheduler runs whatever its clients send: use tls:// (with certificates), or set "
                "jobs.allow-insecure: true if the network is private"
            )
        return self

    @property
    def development(self) -> bool:
        """True on the default profile (no MLPLATFORM_PROFILE): a laptop, where first-run help is allowed."""
        return self.profile == "default"

    @property
    def embedded(self) -> bool:
        """True when the database is the zero-set-up SQLite default (migrations run on serve)."""
        return self.database.url.startswith("sqlite")
