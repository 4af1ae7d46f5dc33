"""The monitoring pages' SVG charts: lines broken where a bucket has no value, every point labelled,
reference and current shares side by side in the same cells, text escaped."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from mlplatform.monitoring.schemas import HistogramRead
from mlplatform.ui import charts

START = datetime(2026, 3, 1, tzinfo=UTC)


def hourly(count: int) -> list[tuple[datetime, datetime]]:
    return [(START + timedelta(hours=i), START + timedelta(hours=i + 1)) for i in range(count)]


def test_a_line_breaks_at_a_bucket_without_value_and_every_point_has_its_value() -> None:
    series = [
        charts.Series("accuracy", [0.5, 0.75, None, 1.0]),
        charts.Series("macro F1", [0.4, None, None, 0.9]),
    ]
    svg = str(
        charts.time_chart(
            title="Accuracy", buckets=hourly(4), series=series, top=1.0, notes=["a", "", "", "b"]
        )
    )
    paths = re.findall(r'<path class="series series-0" d="([^"]+)"', svg)
    assert len(paths) == 1 and paths[0].count("M") == 2 and paths[0].count("L") == 1  # 0.5–0.75, then 1.0
    assert (
        svg.count('<circle class="point series-0"') == 3 and svg.count('<circle class="point series-1"') == 2
    )
    assert "2026-03-01 00:00–01:00 UTC: accuracy 0.5 (a)" in svg
    assert "2026-03-01 03:00–04:00 UTC: macro F1 0.9 (b)" in svg
    assert svg.count('class="point-label"') == 5  # few points: each value written beside it
    assert 'role="img"' in svg and "<title>Accuracy: accuracy, macro F1, 5 points" in svg
    assert "Mar 01 00:00" in svg  # hourly ticks over a short span


def test_many_points_keep_their_tooltips_but_not_their_labels_and_the_axis_fits_the_values() -> None:
    values: list[float | None] = [float(i) for i in range(30)]
    svg = str(charts.time_chart(title="RMSE", buckets=hourly(30), series=[charts.Series("RMSE", values)]))
    assert svg.count("<circle") == 30 and "point-label" not in svg
    assert ">30</text>" in svg  # the axis ends at the largest value rounded up (29 → 30)


def test_percent_axis_and_escaped_names() -> None:
    svg = str(
        charts.time_chart(
            title="<b>coverage</b>",
            buckets=hourly(2),
            series=[charts.Series("a<b", [0.5, 1.0])],
            percent=True,
        )
    )
    assert "<b>" not in svg and "&lt;b&gt;coverage" in svg and "a&lt;b 50 %" in svg and ">100 %</text>" in svg


def test_drift_histogram_puts_both_samples_in_the_same_cells_as_shares() -> None:
    numeric = HistogramRead(reference=[0, 10, 10, 0], current=[0, 0, 30, 10], edges=[0.0, 1.0, 2.0])
    svg = str(charts.drift_histogram(numeric, "age"))
    assert svg.count('class="bar-reference"') == svg.count('class="bar-current"') == charts.DISPLAY_BINS
    shares = re.findall(r"reference ([\d.]+) %, current ([\d.]+) %", svg)
    rounding = pytest.approx(100.0, abs=0.05 * len(shares))  # each share is written to 0.1 %
    assert sum(float(r) for r, _ in shares) == rounding and sum(float(c) for _, c in shares) == rounding
    categorical = HistogramRead(reference=[5, 5, 0], current=[2, 6, 2], labels=["paris", "oslo", "<new>"])
    svg = str(charts.drift_histogram(categorical, "city"))
    assert svg.count('class="bar-reference"') == 3
    assert (
        "&lt;new&gt;: reference 0.0 %, current 20.0 %" in svg
        and "paris: reference 50.0 %, current 20.0 %" in svg
    )
    assert "no values" in str(
        charts.drift_histogram(HistogramRead(reference=[0], current=[0], labels=["x"]), "x")
    )
