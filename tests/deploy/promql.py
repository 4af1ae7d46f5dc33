"""PromQL helpers for the deploy tests: promtool and prometheus, expressions, the metrics they name."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

REPO = Path(__file__).parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "mlplatform.json"
# Grafana's variables a panel's query may hold, and what stands for each when an expression is checked.
TEMPLATE_VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "model": ".*",
    "environment": ".*",
}
# Series Prometheus writes itself (the alerts panel): not exported by mlplatform.
PROMETHEUS_SERIES = {"ALERTS", "ALERTS_FOR_STATE"}


def tool(name: str) -> str:
    """The path of a Prometheus binary; the test fails (never skips) when it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: `make prometheus` installs Debian's `prometheus` package "
            "(promtool and the server)",
            pytrace=False,
        )
    return found


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def substitute(expr: str, values: Mapping[str, str] = TEMPLATE_VALUES) -> str:
    """`$name`, `${name}` and `${name:format}` replaced by their values; an unknown variable fails."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            pytest.fail(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those folded into rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """`panel title / refId` → expression as Grafana would send it, variables substituted."""
    found: dict[str, str] = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found[f"{panel['title']} / {target['refId']}"] = substitute(target["expr"])
    return found


def check_expressions(expressions: Mapping[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a throwaway file with one recording rule per expression: Prometheus' own
    parser and type checks say whether each is valid PromQL."""
    rules = [{"record": f"check:expression_{i}", "expr": expr} for i, expr in enumerate(expressions.values())]
    path = folder / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}))
    return promtool("check", "rules", path)


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects (by name or by a `__name__` matcher)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__")
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.Call):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, promql_parser.AggregateExpr):
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
            walk(node.expr)

    walk(promql_parser.parse(expr))
    return names
