"""deploy/grafana/mlplatform.json: a `model` variable, every panel's query valid PromQL, the views the guide
asks for. That every metric it names is exported: tests/e2e/test_prometheus.py, on a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.promql import (
    DASHBOARD,
    check_expressions,
    dashboard_expressions,
    metric_names,
    panels,
    substitute,
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def test_model_variable_lists_the_served_models(dashboard: dict[str, Any]) -> None:
    model = variables(dashboard)["model"]
    assert model["type"] == "query" and model["multi"] and model["includeAll"]
    assert re.fullmatch(r"label_values\(ml_predictions_total\{.*\}, model_id\)", model["definition"])
    assert variables(dashboard)["datasource"]["query"] == "prometheus"


def test_every_panel_expression_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) >= 20
    result = check_expressions(expressions, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_the_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    result = check_expressions({"broken": "sum by (model_id) (rate(ml_predictions_total[5m])"}, tmp_path)
    assert result.returncode != 0


def test_panels_are_per_model_and_cover_what_operators_watch(dashboard: dict[str, Any]) -> None:
    by_title = {
        panel["title"]: [substitute(t["expr"]) for t in panel.get("targets", [])]
        for panel in panels(dashboard)
    }
    every = " ".join(expr for exprs in by_title.values() for expr in exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (model_id, le)" in every
    names = set().union(*(metric_names(expr) for exprs in by_title.values() for expr in exprs))
    assert {
        "ml_predictions_latency_bucket",
        "ml_predictions_total",
        "ml_predictions_errors_total",
        "ml_model_accuracy",
        "ml_feature_drift_score",
        "ml_prediction_cache_hits_total",
        "ml_prediction_cache_misses_total",
        "ml_system_memory_used_mb",
        "ml_system_memory_usage_percent",
        "ml_system_cpu_usage_percent",
        "ALERTS",
        "ml_alerts_total",
    } <= names
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "model_id" in target["expr"] and "ALERTS" not in target["expr"]:
                assert 'model_id=~"$model"' in target["expr"], (panel["title"], target["expr"])
            assert 'environment=~"$environment"' in target["expr"], (panel["title"], target["expr"])


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert not cells & taken, panel["title"]
        taken |= cells
