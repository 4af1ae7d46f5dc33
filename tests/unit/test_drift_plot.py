"""The drift report plot: a PNG, one panel per feature, drawn without pyplot's global state."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from mlplatform.clock import utcnow
from mlplatform.monitoring import plot
from mlplatform.monitoring.drift import ReferenceProfile, compare
from mlplatform.monitoring.schemas import DriftReportRead, FeatureDriftRead

PNG = b"\x89PNG\r\n\x1a\n"


def report(features: int) -> DriftReportRead:
    rng = np.random.default_rng(0)
    reference: dict[str, object] = {f"x{i}": rng.normal(0, 1, 2_000) for i in range(features)}
    current: dict[str, object] = {f"x{i}": rng.normal(0.5 * (i == 0), 1, 500) for i in range(features)}
    reference["city"] = rng.choice(["paris", "oslo", "rome"], 2_000)
    current["city"] = rng.choice(["paris", "oslo", "berlin"], 500)
    found = compare(ReferenceProfile.from_columns(reference), current).to_dict()
    now = utcnow()
    return DriftReportRead(
        id="r1",
        model="churn",
        version=1,
        version_id="churn-v1-20260101000000",
        start=now - timedelta(hours=1),
        end=now,
        trigger="manual",
        created_at=now,
        status=found["status"],
        drift=found["drift"],
        drifted_features=found["drifted_features"],
        alpha=found["alpha"],
        tests=found["tests"],
        sampled_rows=500,
        reference_rows=2_000,
        features=[FeatureDriftRead.model_validate(f) for f in found["features"]],
    )


def dimensions(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_a_report_is_a_png_that_grows_with_its_features() -> None:
    few, many = plot.render(report(1)), plot.render(report(8))
    assert few.startswith(PNG) and many.startswith(PNG)
    assert dimensions(many)[1] > dimensions(few)[1]  # more rows of panels
    assert len(many) > len(few)


def test_insufficient_data_and_an_empty_report_still_draw() -> None:
    thin = report(2)
    unknown = {"status": "insufficient_data", "histogram": None}
    features = [f.model_copy(update=unknown) for f in thin.features]
    assert plot.render(thin.model_copy(update={"features": features})).startswith(PNG)
    assert plot.render(thin.model_copy(update={"features": []})).startswith(PNG)
