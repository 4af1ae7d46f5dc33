"""Alert rules and dashboard against the real thing: Debian's Prometheus scraping `mlplatform serve`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.api.models import reference
from tests.deploy.promql import (
    DASHBOARD,
    PROMETHEUS_SERIES,
    RULES,
    alert_rules,
    dashboard_expressions,
    metric_names,
    substitute,
    tool,
)
from tests.e2e.conftest import ServerProcess, run_cli
from tests.services import RedisServer, free_port

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-prometheus-admin-key-0123456789"
FAST_FOR = "5s"  # the rules' copy that may fire within the test; alerts.yml itself is loaded unchanged


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def alert_rule(self, group: str, name: str) -> dict[str, Any]:
        for found in self.api("rules", type="alert")["groups"]:
            if found["name"] == group:
                for rule in found["rules"]:
                    if rule["name"] == name:
                        return dict(rule)
        pytest.fail(f"Prometheus has no rule {name} in group {group}:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_for(self, what: str, done: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout}s\n{self.output()}")
            time.sleep(0.2)


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Prometheus]]:
    """`start(config)`: Debian's prometheus on a free loopback port, data in tmp_path; ready when returned."""
    started: list[Prometheus] = []

    def start(config: dict[str, Any]) -> Prometheus:
        folder = tmp_path / "prometheus"
        folder.mkdir()
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        address = f"127.0.0.1:{free_port()}"
        log = folder / "prometheus.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address={address}",
                    "--log.level=warn",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        prometheus = Prometheus(process=process, url=f"http://{address}", log=log)
        started.append(prometheus)

        def ready() -> bool:
            try:
                return httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        prometheus.wait_for("prometheus ready", ready)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.process.terminate()
        try:
            prometheus.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prometheus.process.kill()
            prometheus.process.wait()


def fast_copy(folder: Path) -> Path:
    """alerts.yml with every `for` cut to FAST_FOR, in groups of their own."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        group["name"] += "_fast"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FAST_FOR
    path = folder / "alerts-fast.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_cache_down_goes_from_inactive_to_firing_on_a_real_prometheus(
    start_server: StartServer,
    start_prometheus: Callable[[dict[str, Any]], Prometheus],
    private_redis: RedisServer,
    tmp_path: Path,
) -> None:
    server = start_server(
        {
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "MLPLATFORM_CACHE__URL": private_redis.url,
            "MLPLATFORM_CACHE__TIMEOUT_MS": "200",
            "MLPLATFORM_MANAGEMENT__HEALTH__REFRESH_SECONDS": "1",
        }
    )
    server.wait_for("/actuator/health/readiness")
    assert server.get("/actuator/prometheus").status_code == 401  # a scrape needs a key: a viewer's will do
    created = httpx.post(
        f"{server.base_url}/api/admin/api-keys",
        json={"name": "prometheus", "role": "viewer", "owner": "monitoring"},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    credentials = tmp_path / "scrape-key"
    credentials.write_text(created.json()["key"])
    target = f"127.0.0.1:{server.port}"
    prometheus = start_prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES), str(fast_copy(tmp_path))],
            "scrape_configs": [
                {
                    "job_name": "mlplatform",
                    "metrics_path": "/actuator/prometheus",
                    "authorization": {"type": "Bearer", "credentials_file": str(credentials)},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
    )

    def cache_up() -> list[str]:
        found = prometheus.api("query", query='ml_health_component_up{component="cache"}')["result"]
        return [sample["value"][1] for sample in found]

    prometheus.wait_for("the cache's health scraped", lambda: cache_up() == ["1"])
    [scraped] = prometheus.api("targets")["activeTargets"]
    assert scraped["health"] == "up" and scraped["labels"]["instance"] == target, scraped
    for group in ("ml_platform_alerts", "ml_platform_alerts_fast"):
        rule = prometheus.alert_rule(group, "CacheDown")
        assert rule["state"] == "inactive" and rule["alerts"] == [], rule

    # Every query of the dashboard runs on the real Prometheus (promtool parsed them; this evaluates them).
    for title, expr in dashboard_expressions(json.loads(DASHBOARD.read_text())).items():
        assert prometheus.api("query", query=expr)["resultType"] == "vector", title

    private_redis.stop()
    seen: list[str] = []

    def fired() -> bool:
        state = prometheus.alert_rule("ml_platform_alerts_fast", "CacheDown")["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == "firing"

    prometheus.wait_for("CacheDown firing", fired)
    assert seen[-2:] == ["pending", "firing"], seen
    [alert] = prometheus.alert_rule("ml_platform_alerts_fast", "CacheDown")["alerts"]
    assert alert["labels"] == {
        "alertname": "CacheDown",
        "severity": "warning",
        "component": "cache",
        "application": "mlplatform",
        "environment": "development",
        "instance": target,
        "job": "mlplatform",
    }
    assert alert["annotations"]["summary"] == f"Cache (Redis) unreachable from {target}"
    # alerts.yml as shipped holds it pending for its full minute
    real = prometheus.alert_rule("ml_platform_alerts", "CacheDown")
    assert real["state"] == "pending" and real["alerts"][0]["labels"]["instance"] == target, real
    assert real["duration"] == 60

    private_redis.start()
    prometheus.wait_for(
        "CacheDown resolved",
        lambda: prometheus.alert_rule("ml_platform_alerts_fast", "CacheDown")["state"] == "inactive",
    )


def exported(exposition: str) -> set[str]:
    """Every name a scrape can select: each sample's, and each declared family's (a labelled metric with no
    child yet, such as ml_model_accuracy before any feedback, is declared but has no sample), with a
    histogram's _bucket, _sum and _count."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


def test_the_dashboard_and_the_rules_name_only_metrics_the_server_exports(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    headers = {"X-API-Key": ADMIN_KEY}
    model = reference("xgboost-ubj", tmp_path / "refs")
    env = {"MLPLATFORM_URL": server.base_url, "MLPLATFORM_API_KEY": ADMIN_KEY}
    uploaded = run_cli(["models", "upload", "fraud", str(model.path)], env, tmp_path)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    predicted = httpx.post(
        f"{server.base_url}/api/ml/predict",
        json={"model": "fraud", "features": model.X[0].tolist()},
        headers=headers,
        timeout=30,
    )
    assert predicted.status_code == 200, predicted.text
    scrape = server.get("/actuator/prometheus", headers=headers)
    assert scrape.status_code == 200
    names = exported(scrape.text)
    assert 'ml_predictions_latency_bucket{application="mlplatform"' in scrape.text  # labelled series exist

    dashboard = json.loads(DASHBOARD.read_text())
    used: dict[str, set[str]] = {
        where: metric_names(expr) for where, expr in dashboard_expressions(dashboard).items()
    }
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<selector>, <label>)
            selector = substitute(variable["definition"]).removeprefix("label_values(").rsplit(",", 1)[0]
            used[f"variable {variable['name']}"] = metric_names(selector)
    for rule in alert_rules():
        used[f"rule {rule['alert']}"] = metric_names(rule["expr"])
    missing = {where: sorted(found - names - PROMETHEUS_SERIES) for where, found in used.items()}
    assert not {where: names for where, names in missing.items() if names}, "not exported by the server"
    assert all(used.values()), [where for where, found in used.items() if not found]
