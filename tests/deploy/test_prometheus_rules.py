"""deploy/prometheus/alerts.yml: valid for promtool, every rule unit-tested, the guide's four rules kept."""

from __future__ import annotations

import re

import yaml

from tests.deploy.promql import RULE_TESTS, RULES, alert_rules, promtool

# The operator guide's rules: name → (comparison that ends the expression, for, severity).
GUIDE_RULES = {
    "HighPredictionLatency": ("> 50", "5m", "warning"),
    "ModelAccuracyDegraded": ("< 0.8", "10m", "critical"),
    "HighMemoryUsage": ("> 90", "5m", "warning"),
    "LowThroughput": ("< 10", "10m", "warning"),
}
REQUIRED = {
    "HighPredictionErrorRate",
    "FeatureDriftDetected",
    "PredictionLogsDropped",
    "TrainingJobsFailed",
    "DatabaseDown",
    "CacheDown",
}


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_rule_passes_its_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_test_where_it_fires_and_one_where_it_does_not() -> None:
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no test where it stays quiet"
        for case in mine:
            for alert in case["exp_alerts"]:
                assert alert.get("exp_annotations"), f"{rule['alert']}: annotations are not checked"


def test_the_guide_rules_keep_their_names_and_thresholds_and_the_others_are_there() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert len(rules) == len(alert_rules()), "an alert name is used twice"
    for name, (comparison, duration, severity) in GUIDE_RULES.items():
        rule = rules[name]
        assert re.sub(r"\s+", " ", rule["expr"]).strip().endswith(comparison), rule["expr"]
        assert rule["for"] == duration
        assert rule["labels"]["severity"] == severity
    assert set(rules) == set(GUIDE_RULES) | REQUIRED


def test_every_rule_has_a_severity_a_summary_and_a_description_naming_what_it_is_about() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        if not rule["expr"].strip().endswith("== 0"):  # an up/down rule's value is always 0
            assert "$value" in description, rule["alert"]
        if "model_id" in rule["expr"]:  # per-model rules name the model, per-instance ones the instance
            assert "$labels.model_id" in summary and "$labels.model_id" in description, rule["alert"]
        elif "by (application, environment)" not in rule["expr"]:
            assert "$labels.instance" in summary and "$labels.instance" in description, rule["alert"]
